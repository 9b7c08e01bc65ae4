"""torch's generic CUDA launcher (``torch._C._StaticCudaLauncher``) as a recorder, for CPU
tests of a CUDA module's launches: ``launch._impl`` patched to return one, a
``StaticKernel`` loads "functions" and each launch is kept as the tuple it passed.

    >>> recorder = LaunchRecorder()
    >>> recorder._load_kernel("k.cubin", "k", 0, 0)[0]
    'function k'
"""
from __future__ import annotations


class LaunchRecorder:
    def __init__(self):
        self.launches = []

    @staticmethod
    def _load_kernel(path, name, shared, device):
        return (f"function {name}", 0, 0)

    def _launch_kernel(self, *launch):
        self.launches.append(launch)
