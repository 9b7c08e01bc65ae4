"""Autotuning: config spaces, measurement, and search. No persistence.

    spaces   search spaces from configs/autotune/*.toml, pruning, the default config
             (``Config`` itself is the kernel contract's: ``compiler.kernels.spec``)
    build    re-exported from ``compiler.kernels.build`` (the back end builds): cubins on a CPU
    measurement  KernelLaunch (how a kernel is called), Tuner / measure / tune: every candidate's
             output checked against the default's, timed on a GPU (on CPU: "not_timed")
    search   plan_trials (skip what was timed), coordinate_descent (budgeted search)
    prune    configs that cannot build for a target, found before building (lower bounds)
    cost     a cost model that orders candidates before any is timed
    timing   timers (CUDA events; tests give their own) and the card's copy bandwidth
    halving  successive halving with a roofline stop (the pipeline's tune stage)

The store is not imported here (the compiler knows nothing of Parquet): callers turn
``BuildResult`` and ``Measurement`` into ``storage`` records (see benchmarks/bench_autotune.py).
"""
# Where each public name lives; imported on first use, so reading a search space (a config
# check) does not import Triton.
_PUBLIC = {
    **dict.fromkeys(("BUILD_STATUSES", "BuildResult", "MissingDtypesError", "build"),
                    "..kernels.build"),
    "Target": "..kernels.spec", "load_kernel": "..kernels.load",
    **dict.fromkeys(("DeviceInfo", "KernelLaunch", "Measurement", "TensorArg", "TuneResult",
                     "Tuner", "device_info", "launch_from_meta", "make_inputs", "measure",
                     "outputs_match", "record_launches", "tune"), ".measurement"),
    **dict.fromkeys(("SearchResult", "coordinate_descent", "plan_trials"), ".search"),
    **dict.fromkeys(("Config", "Space", "TuningSpaces", "candidates", "config_key",
                     "default_config", "grid", "load_spaces", "neighbours", "next_pow2"),
                    ".spaces"),
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        import importlib
        return getattr(importlib.import_module(_PUBLIC[name], __name__), name)
    raise AttributeError(f"module 'compiler.autotune' has no attribute {name!r}")
