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


def test_a_constant_term_is_worked_apart_as_sympy_would_keep_it():
    """simplify, texpr(_sum), affine_coefficients and index_step set an index's constant term
    aside (a stencil's taps share the rest); each answers as on the whole index, texpr
    character for character as sympy's printer (which puts the constant last but in
    ``c - k*x`` and before negative powers)."""
    import random
    import sympy
    from compiler.sizevars import (TritonPrinter, affine_coefficients, index_step, texpr,
                                   texpr_sum)
    x, y = index_symbol("x", 0), index_symbol("x", 1)
    s0 = sympy.Symbol("s0", integer=True, positive=True)
    terms = [x, y, s0, x * y, s0 * x, s0 ** 2, FloorDiv(x, 96), ModularIndexing(x, 1, 96),
             ModularIndexing(x, 5376, 56), FloorDiv(x, s0), sympy.Max(1, s0) * x]
    rng = random.Random(0)
    for _ in range(2000):
        rest = sum(rng.choice([1, -1, 3, -96]) * rng.choice(terms)
                   for _ in range(rng.randint(1, 3)))
        expr = rest + rng.choice([0, 1, -1, 7, -16416])
        assert texpr(expr) == TritonPrinter().doprint(expr), expr
        offset = sympy.Integer(rng.choice([0, 1, -7, 96]))
        assert texpr_sum(offset, expr) == TritonPrinter().doprint(offset + expr), (offset, expr)
    for offset in (0, 5, -16416):
        expr = 5376 * FloorDiv(x, 5376) + ModularIndexing(x, 1, 5376) + offset
        assert simplify(expr, {x: 301056}) == x + offset
        assert affine_coefficients(3 * x + y + offset, [x, y]) == (offset, [3, 1])
        assert index_step(ModularIndexing(x, 1, 96) + 96 * y + offset, y, {x: 0, y: 0}) == 96


def test_affine_coefficients_of_plain_sums_are_sympys():
    """A sum of products of symbols and numbers has its coefficients read off its terms;
    they are sympy's expand-and-coeff answer, term for term."""
    import random
    import sympy
    from compiler.sizevars import _affine, _affine_plain
    syms = [index_symbol("i", k) for k in range(4)]
    s0 = sympy.Symbol("s0", integer=True, positive=True)
    terms = syms + [s0, s0 * syms[0], syms[0] * syms[1], s0 * syms[2] * syms[3]]
    rng = random.Random(0)
    for _ in range(500):
        expr = sympy.sympify(sum(rng.choice([1, -1, 96, -5376]) * rng.choice(terms)
                                 for _ in range(rng.randint(0, 4))) + rng.choice([0, -3, s0]))
        symbols = tuple(rng.sample(syms, rng.randint(1, 4)))
        plain = _affine_plain(expr, symbols)
        sympys = _affine.__wrapped__(expr + sympy.Mul(2, 1 + syms[0], evaluate=False)
                                     - 2 * syms[0] - 2, symbols)   # not plain: expands
        assert plain == sympys, (expr, symbols)
        if plain is not None:
            assert [type(c) for c in plain[1]] == [type(c) for c in sympys[1]]
