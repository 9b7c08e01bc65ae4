"""``sizevars.simplify`` is memoized on the expression and the ranges of its own symbols; so are
the planning helpers built on it."""
from __future__ import annotations

from compiler import sizevars
from compiler.sizevars import FloorDiv, ModularIndexing, index_symbol, simplify


def test_the_memo_keys_on_the_ranges_of_the_expressions_symbols():
    j = index_symbol("x", 0)
    expr = FloorDiv(j, 64)
    assert simplify(expr, {j: 64}) == 0                # j < 64: the quotient is always 0
    assert simplify(expr, {j: 4096}) == expr           # not the memo of the first call


def test_ranges_of_other_symbols_share_one_memo_entry():
    j, k = index_symbol("x", 0), index_symbol("r", 0)
    expr = 64 * FloorDiv(j, 64) + ModularIndexing(j, 1, 64)
    sizevars._simplify_bounded.cache_clear()
    assert simplify(expr, {j: 4096}) == j
    assert simplify(expr, {j: 4096, k: 7}) == j
    info = sizevars._simplify_bounded.cache_info()
    assert (info.hits, info.misses) == (1, 1)


def test_memoized_planning_answers_are_the_callers_own():
    """merge_dims and affine_coefficients are memoized; a caller that edits what it got
    back (a list, a dict) must not edit what the next caller gets."""
    from compiler.codegen.triton import merge_dims
    from compiler.sizevars import affine_coefficients
    i0, i1 = index_symbol("x", 0), index_symbol("x", 1)
    dims = [(i0, 4), (i1, 8)]
    first_dims, first_map = merge_dims(dims, [8 * i0 + i1])
    assert len(first_dims) == 1 and first_map[i0] != i0     # contiguous: merged into one
    first_dims.clear()
    first_map.clear()
    again_dims, again_map = merge_dims(dims, [8 * i0 + i1])
    assert len(again_dims) == 1 and set(again_map) == {i0, i1}
    offset, coeffs = affine_coefficients(3 * i0 + i1 + 5, [i0, i1])
    coeffs.append(7)
    assert affine_coefficients(3 * i0 + i1 + 5, [i0, i1]) == (5, [3, 1])
    # a strided access that merging would turn into div/mod stays two dims
    assert len(merge_dims(dims, [i0 + 4 * i1])[0]) == 2
