"""Autotuning: config spaces, cross-compiled builds, measurement, and search. No persistence.

    spaces   Config, search spaces from configs/autotune/*.toml, pruning, the default config
    build    build(kernel, config, target) -> BuildResult: cubin + metadata, on a CPU
    measure  KernelLaunch (how a kernel is called), Tuner / measure: check every candidate's
             output against the default's, time on a GPU (never on CPU: "not_timed")
    search   plan_trials (skip what was timed), coordinate_descent (budgeted search)
"""
from .build import BUILD_STATUSES, BuildResult, MissingDtypesError, Target, build, load_kernel
from .search import SearchResult, coordinate_descent, plan_trials
from .spaces import (Config, Space, TuningSpaces, candidates, config_key, default_config, grid,
                     load_spaces, neighbours, next_pow2)

__all__ = ["BUILD_STATUSES", "BuildResult", "MissingDtypesError", "Target", "build",
           "load_kernel", "SearchResult", "coordinate_descent", "plan_trials", "Config", "Space",
           "TuningSpaces", "candidates", "config_key", "default_config", "grid", "load_spaces",
           "neighbours", "next_pow2"]
from .measure import (DeviceInfo, KernelLaunch, Measurement, TensorArg, TuneResult, Tuner,  # noqa: E402
                      device_info, launch_from_meta, make_inputs, measure, outputs_match,
                      record_launches, tune)

__all__ += ["DeviceInfo", "KernelLaunch", "Measurement", "TensorArg", "TuneResult", "Tuner",
            "device_info", "launch_from_meta", "make_inputs", "measure", "outputs_match",
            "record_launches", "tune"]
