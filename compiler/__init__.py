"""kiln's compiler: ATen FX graphs -> Triton kernels + a Python wrapper (Inductor's design, lean).

Knows nothing of Dask or Parquet; ``compiler.artifact.ArtifactCache`` is the one seam to the
store. Public entry points: ``compile_fx``, ``compile_module``, ``lower``, ``load_artifact``.
They are imported on first use, so ``import compiler.artifact`` (all a store reader needs)
does not pay for importing torch and Triton.
"""
__version__ = "0.1.0"

__all__ = ["compile_fx", "compile_module", "lower", "module_key", "load_artifact", "__version__"]

_PUBLIC = {"compile_fx": "api", "compile_module": "api", "lower": "api", "module_key": "api",
           "load_artifact": "runtime"}


def __getattr__(name: str):
    if name in _PUBLIC:
        import importlib
        return getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    raise AttributeError(f"module 'compiler' has no attribute {name!r}")
