"""Models that misbehave on purpose, to exercise the pipeline's fault handling.

``slow`` gives a test a window in which to kill the worker running it; ``hang`` never
returns (a per-task timeout must end it); ``segfault`` and ``exit`` end their own process the
way a crashing kernel, compiler or careless library would (only that model may fail);
``train_mode`` returns a module in train mode with dropout and batch norm (compiled in eval
mode, with a warning); ``leaves_worker`` leaves a process behind holding its caller's
stderr, as a pool of compile workers does. Each returns ``(module, example_args)`` like the
tiny zoo's factories when it returns at all.

Example:
    >>> module, (x,) = slow(seconds=0.0)
    >>> module(x).shape
    torch.Size([8, 64])
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import torch

from pipeline.zoo import tiny


def slow(seconds: float = 3.0) -> tiny.Example:
    """The tiny MLP, after sleeping ``seconds`` (a window to kill the worker mid-task)."""
    time.sleep(seconds)
    return tiny.mlp()


def hang(seconds: float = 3600.0) -> tiny.Example:
    """Sleeps far longer than any sane timeout, like a hung compiler or kernel."""
    time.sleep(seconds)
    return tiny.mlp()


def segfault() -> tiny.Example:
    """Kills the calling process with SIGSEGV, as a crashing native library would."""
    os.kill(os.getpid(), signal.SIGSEGV)
    time.sleep(60)  # the signal is delivered asynchronously; never return a model
    raise RuntimeError("SIGSEGV was not delivered")


def exit(code: int = 3) -> tiny.Example:
    """Ends the calling process with ``os._exit(code)``: no exception, no cleanup."""
    os._exit(code)


def train_mode(batch: int = 4) -> tiny.Example:
    """Linear -> BatchNorm -> Dropout, returned in train mode (as ``nn.Module`` starts)."""
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.BatchNorm1d(8),
                                 torch.nn.Dropout(0.5))
    return module.train(), (torch.randn(batch, 8),)


def leaves_worker(pid_file: str, seconds: float = 120.0) -> tiny.Example:
    """The tiny MLP, and a process that sleeps ``seconds`` with the caller's stderr (its pid
    written to ``pid_file``): what kiln's or Inductor's compile workers leave a process."""
    worker = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    with open(pid_file, "w") as f:
        f.write(str(worker.pid))
    return tiny.mlp()
