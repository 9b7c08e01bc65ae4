"""A compile worker process: reads JSON jobs from stdin, one per line, and answers each with
one JSON line. Started by ``kernels.precompile.CompilePool``; ends when stdin closes.

A job is a ``precompile.ModuleJob`` as a dict (answered with ``{"errors", "launchers",
"seconds"}``) or ``{"ping": true}`` (answered once torch, Triton and kiln are imported);
a ping may name a ``"target"`` (``["cuda", 90, 32]``), which the worker then warms Triton's
backend for (``build.warm_backend``) before answering ``{"pid", "warm_error"}``.

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
    from compiler.kernels import build, precompile  # imported once, before jobs
    warmed: set[tuple] = set()      # targets this process has compiled for: warm already
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("ping"):
            reply = {"pid": os.getpid()}
            target = tuple(request.get("target") or ())
            if target and target not in warmed:
                reply["warm_error"] = build.warm_backend(target)
                warmed.add(target)      # a failure would only fail again: not retried
        else:
            kernels = tuple(build.KernelJob(**k) for k in request.pop("kernels"))
            request["target"] = tuple(request["target"])
            reply = precompile.compile_module_job(precompile.ModuleJob(**request,
                                                                       kernels=kernels))
            warmed.add(request["target"])   # its compile started the backend too
        replies.write(json.dumps(reply) + "\n")


if __name__ == "__main__":
    main()
