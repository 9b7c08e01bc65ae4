"""kiln's compiler: ATen FX graphs -> Triton kernels + a Python wrapper (Inductor's design, lean).

Knows nothing of Dask or Parquet; ``compiler.artifact.ArtifactCache`` is the one seam to the
store. Public entry points: ``compile_fx``, ``compile_module``, ``lower``, ``load_artifact``.
"""
__version__ = "0.1.0"

from .api import compile_fx, compile_module, lower, module_key  # noqa: E402
from .runtime import load_artifact  # noqa: E402

__all__ = ["compile_fx", "compile_module", "lower", "module_key", "load_artifact", "__version__"]
