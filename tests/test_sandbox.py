"""pipeline.sandbox: a task that ends its process fails alone, after its attempts, each in a
fresh child; the child is reused while it lives and ends with its parent."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pipeline.sandbox import TaskCrashed, TaskStopped, run_isolated, stop_task

REPO = Path(__file__).resolve().parent.parent


def test_results_exceptions_and_a_warm_child():
    assert run_isolated(pow, 2, 10) == 1024
    child_pid = run_isolated(os.getpid)
    assert child_pid != os.getpid() and run_isolated(os.getpid) == child_pid   # kept warm
    with pytest.raises(ValueError, match="invalid literal"):
        run_isolated(int, "x")                  # an exception travels back as itself
    assert run_isolated(os.getpid) == child_pid


def test_a_crash_is_retried_in_fresh_children_then_reported():
    with pytest.raises(TaskCrashed) as info:
        run_isolated(os._exit, 3, attempts=2, what="capture of 'm'")
    assert info.value.attempts == 2
    assert str(info.value).startswith("capture of 'm' ended its process (exit code 3) in each "
                                      "of 2 attempt(s)")
    assert run_isolated(pow, 3, 2) == 9         # the next task gets a new child


def test_a_fatal_signal_names_itself_and_leaves_its_stack_in_the_log(capfd):
    """A segfault (as native code would raise it) fails the task naming the signal; the
    child's standard error (the run log on kiln's cluster) holds the Python stack."""
    with pytest.raises(TaskCrashed):     # drop the warm child: the next one writes to capfd
        run_isolated(os._exit, 0, attempts=1)
    with pytest.raises(TaskCrashed, match="killed by SIGSEGV"):
        run_isolated(_segfault, attempts=1, what="tune of 'm'")
    err = capfd.readouterr().err
    assert "Fatal Python error: Segmentation fault" in err
    assert "in _segfault" in err


def _segfault() -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


def test_a_child_ends_when_its_worker_dies(tmp_path):
    """A worker restarted for a timeout must not leave its task's process behind."""
    code = ("import os, sys, time; from pipeline.sandbox import run_isolated; "
            "print(run_isolated(os.getpid), flush=True); time.sleep(60)")
    worker = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    child = int(worker.stdout.readline())
    worker.kill()
    worker.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and os.path.exists(f"/proc/{child}"):
        if open(f"/proc/{child}/stat").read().split()[2] == "Z":
            break                               # exited; a zombie until init reaps it
        time.sleep(0.1)
    assert not os.path.exists(f"/proc/{child}") or \
        open(f"/proc/{child}/stat").read().split()[2] == "Z"


def test_stop_task_kills_only_that_task_and_it_is_not_retried():
    """A timed-out task is ended by killing its child (no worker restart): the task raises
    TaskStopped at once, whatever its attempts, and the thread's next task gets a new child."""
    outcome = {}

    def hung() -> None:
        try:
            run_isolated(time.sleep, 60, attempts=3, what="capture of 'hang'", key="k-1")
        except TaskStopped as exc:
            outcome["stopped"] = str(exc)

    thread = threading.Thread(target=hung)
    thread.start()
    deadline = time.monotonic() + 30
    while not stop_task("k-1"):          # False until the task is running in its child
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.05)
    thread.join(10)
    assert not thread.is_alive()
    assert outcome["stopped"].startswith("capture of 'hang' was stopped")
    assert not stop_task("k-1")          # nothing of that key runs any more
    assert run_isolated(pow, 2, 5) == 32
