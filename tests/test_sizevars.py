"""``sizevars.simplify`` is memoized on the expression and the ranges of its own symbols."""
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
