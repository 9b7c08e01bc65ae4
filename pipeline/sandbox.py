"""Run a task in a child process of its worker, so a task that ends its process fails alone.

A model's factory is the user's code, and capture, lowering and builds run native code
(torch.export, Triton, LLVM): any of them may call ``os._exit`` or crash. Run in the Dask
worker itself, such a crash kills the worker, and the scheduler counts the death against
every task the worker held, so unrelated models fail with ``KilledWorker``. Here each worker
thread keeps one child process (``python -c``, started on first use and kept: it imports
torch once) and hands it one task at a time over a socket. If the child dies mid-task, only
that task is affected: it is tried again in a fresh child, ``attempts`` times in all, then
raises ``TaskCrashed`` naming the exit status; the worker and its other tasks carry on.

The child keeps the worker's standard output and error (on kiln's embedded cluster, the
run's log file) and ends itself when its worker dies, so a restarted worker takes its child
along. A task that runs past its timeout is ended from outside: ``stop_task(key)`` (run on
its worker) kills the child running that task, which raises ``TaskStopped`` at once, with no
further attempt; the worker keeps running. Restarting the worker instead costs a process
start, and Dask's restart was seen to close the worker's Nanny for good (a race with the
scheduler's removal of the closing worker, most likely), shrinking the cluster.
Not ``multiprocessing``: Dask workers are daemonic processes, which may not have
multiprocessing children, and its spawned children re-run the caller's main script
(``compiler.precompile`` chose a plain subprocess for the same reasons).

Example:
    >>> run_isolated(pow, 2, 10)          # in a child process of this one
    1024
"""
from __future__ import annotations

import contextlib
import faulthandler
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any, Callable, Iterator

_PARENT_POLL_S = 1.0      # how often a child checks that its worker lives
_DEATH_POLL_S = 0.2       # how often a waiting worker checks that its child lives


class TaskCrashed(RuntimeError):
    """A task's process ended before the task returned, in every attempt."""

    def __init__(self, message: str, attempts: int):
        super().__init__(message, attempts)
        self.message, self.attempts = message, attempts

    def __str__(self) -> str:
        return self.message


def describe_exit(code: int | None) -> str:
    """``exit code 3``, ``killed by SIGSEGV``.

    >>> describe_exit(3), describe_exit(-11)
    ('exit code 3', 'killed by SIGSEGV')
    """
    if code is None:
        return "no exit status"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class _Child:
    """One child process serving tasks over a socket, one at a time."""

    def __init__(self) -> None:
        parent, child = socket.socketpair()
        code = (f"import sys; sys.path[:] = {sys.path!r}; from pipeline.sandbox import serve; "
                f"serve({child.fileno()}, {os.getpid()})")
        self.proc = subprocess.Popen([sys.executable, "-c", code], pass_fds=(child.fileno(),),
                                     stdin=subprocess.DEVNULL)
        child.close()
        self.conn = Connection(parent.detach())

    def call(self, fn: Callable, args: tuple) -> Any:
        """``fn(*args)`` in the child; raises ``ChildDied`` if the child ends first."""
        try:
            self.conn.send((fn, args))
            while not self.conn.poll(_DEATH_POLL_S):
                if self.proc.poll() is not None and not self.conn.poll(0):
                    break
            else:
                kind, value = self.conn.recv()
                if kind == "raised":
                    raise value
                return value
        except (EOFError, OSError):
            pass            # the socket closed under us: the child is gone
        self.close()
        raise ChildDied(self.proc.returncode)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.conn.close()


class TaskStopped(RuntimeError):
    """The task was stopped from outside (``stop_task``), e.g. at its timeout."""


class ChildDied(Exception):
    def __init__(self, code: int | None):
        super().__init__(code)
        self.code = code


_local = threading.local()
# The children running keyed tasks, for stop_task (called from another thread: Dask runs
# ``Client.run`` functions on the worker's event loop, not the task's thread).
_running: dict[str, _Child] = {}
_stopped: set[str] = set()
_lock = threading.Lock()


def _child() -> _Child:
    child = getattr(_local, "child", None)
    if child is None or not child.alive():
        child = _local.child = _Child()
    return child


def run_isolated(fn: Callable[..., Any], *args: Any, attempts: int = 1,
                 what: str = "task", key: str | None = None) -> Any:
    """``fn(*args)`` in this thread's child process (see the module doc). ``fn`` and
    ``args`` are pickled to the child and the result back; ``what`` names the task in the
    ``TaskCrashed`` message; ``key`` lets ``stop_task`` end it."""
    codes = []
    for _ in range(max(attempts, 1)):
        child = _child()
        try:
            with _tracked(key, child):
                return child.call(fn, args)
        except ChildDied as died:
            if _was_stopped(key):
                raise TaskStopped(f"{what} was stopped from outside; its process was "
                                  f"killed") from None
            codes.append(describe_exit(died.code))
            _local.child = None
    raise TaskCrashed(f"{what} ended its process ({', '.join(dict.fromkeys(codes))}) in "
                      f"each of {len(codes)} attempt(s), each in a fresh process; the worker "
                      f"and the other tasks carried on", len(codes))


def stop_task(key: str) -> bool:
    """Kill the child running task ``key`` in this process, so that task raises
    ``TaskStopped``; False when no task of that key is running here."""
    with _lock:
        child = _running.get(key)
        if child is None:
            return False
        _stopped.add(key)
    # Only the kill here: the task's own thread sees its child gone and closes the socket
    # (closing it under that thread's poll could hit a reused descriptor).
    child.proc.kill()
    return True


@contextlib.contextmanager
def _tracked(key: str | None, child: _Child) -> Iterator[None]:
    """Registers ``child`` as running task ``key`` for the duration of one call."""
    if key is None:
        yield
        return
    with _lock:
        _running[key] = child
    try:
        yield
    finally:
        with _lock:
            _running.pop(key, None)


def _was_stopped(key: str | None) -> bool:
    with _lock:
        if key in _stopped:
            _stopped.discard(key)
            return True
        return False


def serve(fd: int, parent_pid: int) -> None:
    """The child's loop: receive ``(fn, args)``, send back ``("ok", result)`` or
    ``("raised", exception)``; end when the socket closes or the parent dies."""
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), daemon=True).start()
    # A fatal signal (a segfault in native code, an abort from a CUDA error) prints the
    # Python stack of every thread to standard error, the run's log on kiln's own cluster:
    # the task's failure row can only name the signal.
    faulthandler.enable(all_threads=True)
    conn = Connection(fd)
    while True:
        try:
            fn, args = conn.recv()
        except (EOFError, OSError):
            return
        try:
            reply = ("ok", fn(*args))
        except Exception as exc:   # tasks return their failures; this is a safety net
            reply = ("raised", exc)
        try:
            conn.send(reply)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            conn.send(("raised", RuntimeError(f"result could not be sent back: {exc}")))


def _exit_with_parent(parent_pid: int) -> None:
    """End this process when its worker has gone (it is re-parented then)."""
    while os.getppid() == parent_pid:
        time.sleep(_PARENT_POLL_S)
    os._exit(0)
