"""The store as the compiler's cache: compile_module(..., cache=store) misses, then hits."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
compiler = pytest.importorskip("compiler")

from storage import Store  # noqa: E402


class _Model(torch.nn.Module):
    def forward(self, x):
        return torch.relu(x) * 2.0 + 1.0


def test_compile_module_hits_the_store_and_load_runs_it(tmp_path):
    store = Store(tmp_path / "store")
    x = torch.randn(8, 16)
    first = compiler.compile_module(_Model(), (x,), cache=store)
    assert first.cache_hit is False
    [module_key] = store.keys("modules")
    # A fresh process would see the same: reopen the store from its path.
    second = compiler.compile_module(_Model(), (x,), cache=Store(tmp_path / "store"))
    assert second.cache_hit is True
    torch.testing.assert_close(second(x), _Model()(x))
    row = store.get("modules", module_key)
    assert row["target"] == "cpu" and row["options_hash"] and row["torch_version"]
    assert set(row["kernel_keys"]) <= set(store.keys("kernels"))
    loaded = store.load(module_key)
    out = loaded(x)
    out = out[0] if isinstance(out, (list, tuple)) else out
    torch.testing.assert_close(out, _Model()(x))
