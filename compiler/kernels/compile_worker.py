"""A compile worker process: reads JSON jobs from stdin, one per line, and answers each with
one JSON line. Started by ``kernels.precompile.CompilePool``; ends when stdin closes.

A job is a ``precompile.ModuleJob`` as a dict (answered with ``{"errors", "launchers",
"seconds"}``, by ``worker_build``, which imports Triton but not torch) or ``{"ping": true}``
(answered once Triton and ``worker_build`` are imported); a ping may name a ``"target"`` (``["cuda", 90, 32]``), which the worker then warms Triton's
backend for (``build.warm_backend``) before answering ``{"pid", "torch", "warm_error"}``.

Example:
    >>> # echo '{"ping": true}' | python -c "from compiler.kernels.compile_worker import main; main()"
"""
from __future__ import annotations

import json
import os
import sys


def main() -> None:
    # Replies go to the original stdout; anything a library prints goes to stderr instead,
    # so it cannot corrupt the protocol.
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    from compiler.kernels import worker_build as build  # imported once, before jobs
    warmed: set[tuple] = set()      # targets this process has compiled for: warm already
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("ping"):
            # whether torch was imported: a worker needs it only where a kernel could not
            # compile from the kernels alone (``worker_build``), and it costs seconds
            reply = {"pid": os.getpid(), "torch": "torch" in sys.modules}
            target = tuple(request.get("target") or ())
            if target and target not in warmed:
                reply["warm_error"] = build.warm_backend(target)
                warmed.add(target)      # a failure would only fail again: not retried
        else:
            reply = build.compile_module_job(request)
            warmed.add(tuple(request["target"]))   # its compile started the backend too
        replies.write(json.dumps(reply) + "\n")


if __name__ == "__main__":
    main()
