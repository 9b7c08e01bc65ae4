"""Autotuning: config spaces, measurement, and search. No persistence.

    spaces   search spaces from configs/autotune/*.toml, pruning, the default config
             (``Config`` itself is the kernel contract's: ``compiler.kernels.spec``)
    build    re-exported from ``compiler.kernels.build`` (the back end builds): cubins on a CPU
    measure  KernelLaunch (how a kernel is called), Tuner / measure / tune: every candidate's
             output checked against the default's, timed on a GPU (on CPU: "not_timed")
    search   plan_trials (skip what was timed), coordinate_descent (budgeted search)

The store is not imported here (the compiler knows nothing of Parquet): callers turn
``BuildResult`` and ``Measurement`` into ``storage`` records (see benchmarks/bench_autotune.py).
"""
from ..kernels.build import BUILD_STATUSES, BuildResult, MissingDtypesError, Target, build
from ..kernels.load import load_kernel
from .measure import (DeviceInfo, KernelLaunch, Measurement, TensorArg, TuneResult, Tuner,
                      device_info, launch_from_meta, make_inputs, measure, outputs_match,
                      record_launches, tune)
from .search import SearchResult, coordinate_descent, plan_trials
from .spaces import (Config, Space, TuningSpaces, candidates, config_key, default_config, grid,
                     load_spaces, neighbours, next_pow2)

__all__ = ["BUILD_STATUSES", "BuildResult", "MissingDtypesError", "Target", "build",
           "load_kernel", "DeviceInfo", "KernelLaunch", "Measurement", "TensorArg", "TuneResult",
           "Tuner", "device_info", "launch_from_meta", "make_inputs", "measure", "outputs_match",
           "record_launches", "tune", "SearchResult", "coordinate_descent", "plan_trials",
           "Config", "Space", "TuningSpaces", "candidates", "config_key", "default_config", "grid",
           "load_spaces", "neighbours", "next_pow2"]
