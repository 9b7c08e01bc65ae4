"""Dynamic-shape modules lower as their static compiles do. Reshapes over symbolic sizes
(lowering/views.view_as): dims matched in groups of equal product keep plain affine
indices, so a view of a realized buffer stays a view (no copy kernel before the matmul
that reads it). Fusion costs (traffic.load_elements) count loads whose index holds a size
symbol, so a dynamic module fuses what its static compile fuses. Every case is checked
against eager at several sizes."""
from __future__ import annotations

import pytest
import sympy
import torch
from torch.export import Dim

import compiler
from compiler.lowering.views import _dim_groups
from compiler.traffic import load_elements

S, T = sympy.Symbol("s0", positive=True, integer=True), sympy.Symbol("s1", positive=True, integer=True)


@pytest.mark.parametrize("old, new, groups", [
    ((1, S, 32), (S, 32), [([1], [0]), ([2], [1])]),              # a size-1 dim dropped
    ((S, 32), (S, 4, 8), [([0], [0]), ([1], [1, 2])]),            # a dim split
    ((S, 4, 8), (4 * S, 8), [([0, 1], [0]), ([2], [1])]),        # dims merged
    ((2 * S, 3), (S, 6), [([0, 1], [0, 1])]),                    # neither: one group
    ((S, T), (T, S), None),                                      # no split exists
])
def test_dim_groups(old, new, groups):
    old, new = tuple(map(sympy.sympify, old)), tuple(map(sympy.sympify, new))
    assert _dim_groups(old, new) == groups


class NormThenTwoMatmuls(torch.nn.Module):
    """A normalized (1, s, 32) activation read by two matmuls through (s, 32) views, as a
    decode step's q, k and v projections read the normed hidden state."""
    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Parameter(torch.randn(32, 16)), torch.nn.Parameter(torch.randn(32, 8))

    def forward(self, x):
        h = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
        flat = h.view(-1, 32)
        return flat @ self.a, flat @ self.b, h.view(x.shape[1] * 4, 8).sum(-1)


def test_a_dynamic_view_of_a_buffer_is_not_copied():
    model = NormThenTwoMatmuls().eval()
    compiled = compiler.compile_module(model, (torch.randn(1, 5, 32),),
                                       dynamic_shapes=({1: Dim("s", min=2, max=64)},))
    assert "kiln_pw_copy" not in compiled.compiled.source     # a copy kernel of its own
    for n in (2, 7, 33):
        x = torch.randn(1, n, 32)
        with torch.no_grad():
            torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)


def test_a_dynamic_module_fuses_as_its_static_compile():
    """The RMSNorm's statistics and scaling: one kernel, with sizes known or not."""
    model = NormThenTwoMatmuls().eval()
    static = compiler.compile_module(model, (torch.randn(1, 5, 32),))
    dynamic = compiler.compile_module(model, (torch.randn(1, 5, 32),),
                                      dynamic_shapes=({1: Dim("s", min=2, max=64)},))
    assert dynamic.kernel_count == static.kernel_count
    x = torch.randn(1, 19, 32)
    with torch.no_grad():
        torch.testing.assert_close(dynamic(x), model(x), rtol=1e-4, atol=1e-4)


def test_load_elements_of_a_dynamic_layout():
    """A stride that is a size symbol is unknown exactly, and its hint when hinted."""
    i0, i1 = sympy.symbols("i0 i1", integer=True, nonnegative=True)
    index = 32 * S * i0 + i1
    assert load_elements(index, {i0: 1, i1: 32}) is None
    assert load_elements(index, {i0: 1, i1: 32}, hint=True) == 32
    assert load_elements(index, {i0: 2, i1: 32}, hint=True) == 64
