"""kiln's pipeline: zoo configs, the Dask cluster, capture/lower tasks, the runner and the CLI.

Dependency direction: pipeline → storage → compiler. Only ``pipeline.cluster`` touches the
Dask client; tasks (``pipeline.tasks``) are plain functions on small frozen dataclasses.
"""
import os as _os
import sys as _sys

# Dask puts each worker's scratch directory on sys.path, and that directory holds a
# "storage" spill folder: with kiln installed in editable mode (found by a meta-path hook,
# not a sys.path entry) the folder would be imported as a namespace package in place of
# kiln's storage. Tasks import this package first, so putting kiln's own root ahead here
# makes every worker find the real one.
_ROOT = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _ROOT not in _sys.path:
    _sys.path.insert(0, _ROOT)
