"""Sympy index arithmetic: floor division and modular indexing with range-aware simplification.

Index expressions are sympy expressions over index symbols (``i0, i1, ...`` for a value's
logical dims, ``x0, ...`` inside kernels). Views compose by substitution, so a reshape of a
permute of a buffer ends up as one expression; these rules fold it back to an affine form
whenever that is exact, because Triton can only vectorize loads it can see are contiguous.

Example:
    >>> j = index_symbol("x", 0)
    >>> simplify(64 * FloorDiv(j, 64) + ModularIndexing(j, 1, 64), {j: 4096})
    x0
"""
from __future__ import annotations

import functools
from typing import Mapping

import sympy
from sympy.printing.str import StrPrinter


class FloorDiv(sympy.Function):
    """``floor(a / b)`` for non-negative ``a`` and positive integer ``b``."""
    nargs = (2,)
    is_integer = True
    is_nonnegative = True

    @classmethod
    def eval(cls, base, divisor):
        if divisor == 1:
            return base
        if base == 0:
            return sympy.Integer(0)
        if base.is_Integer and divisor.is_Integer:
            return sympy.Integer(int(base) // int(divisor))
        if isinstance(base, FloorDiv):  # (a // b) // c == a // (b * c)
            return FloorDiv(base.args[0], base.args[1] * divisor)
        return None


class ModularIndexing(sympy.Function):
    """``(a // b) % n``: the digit of ``a`` at place value ``b`` in a dim of size ``n``."""
    nargs = (3,)
    is_integer = True
    is_nonnegative = True

    @classmethod
    def eval(cls, base, divisor, modulus):
        if base == 0 or modulus == 1:
            return sympy.Integer(0)
        if base.is_Integer and divisor.is_Integer and modulus.is_Integer:
            return sympy.Integer((int(base) // int(divisor)) % int(modulus))
        return None


@functools.lru_cache(maxsize=None)
def index_symbol(prefix: str, n: int) -> sympy.Symbol:
    """The n-th index variable with the given prefix, e.g. ``i3`` or ``x0``."""
    return sympy.Symbol(f"{prefix}{n}", integer=True, nonnegative=True)


def size_hint(expr) -> int:
    """A number to order strides by: exact when static, else symbols taken as large (2**20),
    which orders row-major strides of dynamic dims (``16*s1`` > ``16``) correctly."""
    expr = sympy.sympify(expr)
    if expr.is_Integer:
        return int(expr)
    return int(expr.subs({sym: 2**20 for sym in expr.free_symbols}))


def upper_bound(expr: sympy.Expr, ranges: Mapping[sympy.Symbol, sympy.Expr]) -> int | None:
    """Largest value ``expr`` takes when each symbol ``s`` ranges over ``[0, ranges[s])``.

    None when unknown (symbolic sizes, negative coefficients we cannot bound).
    """
    if expr.is_Integer:
        return int(expr)
    if expr.is_Symbol:
        size = ranges.get(expr)
        if isinstance(size, int):   # a plain int range (callers outside the compiler)
            return size - 1
        return int(size) - 1 if size is not None and size.is_Integer else None
    if expr.is_Add:
        bounds = [upper_bound(a, ranges) for a in expr.args]
        return None if None in bounds else sum(bounds)
    if expr.is_Mul:
        bounds = [upper_bound(a, ranges) for a in expr.args]
        if None in bounds or any(b < 0 for b in bounds):
            return None      # unknown, or a negative factor we cannot bound this way
        out = 1
        for b in bounds:
            out *= b
        return out
    if isinstance(expr, FloorDiv):
        inner = upper_bound(expr.args[0], ranges)
        return None if inner is None or not expr.args[1].is_Integer else inner // int(expr.args[1])
    if isinstance(expr, ModularIndexing):
        if expr.args[2].is_Integer:
            return int(expr.args[2]) - 1
    return None


def _split_divisible(base: sympy.Expr, divisor: sympy.Expr):
    """Split ``base`` into (terms divisible by ``divisor``, the rest)."""
    whole, rest = [], []
    for term in sympy.Add.make_args(base):
        coeff, _ = term.as_coeff_Mul()
        if divisor.is_Integer and coeff.is_Integer and int(coeff) % int(divisor) == 0:
            whole.append(term)
        else:
            rest.append(term)
    return sympy.Add(*whole), sympy.Add(*rest)


def _simplify_floordiv(base, divisor, ranges):
    whole, rest = _split_divisible(base, divisor)
    rest_ub = upper_bound(rest, ranges)
    if rest_ub is not None and rest_ub < divisor:
        return sympy.expand(whole / divisor)  # the rest never carries into the quotient
    if whole != 0 and rest_ub is not None:
        return sympy.expand(whole / divisor) + FloorDiv(rest, divisor)
    ub = upper_bound(base, ranges)
    if ub is not None and ub < divisor:
        return sympy.Integer(0)
    return FloorDiv(base, divisor)


def _simplify_modular(base, divisor, modulus, ranges):
    # Terms that are multiples of divisor*modulus only add whole turns: drop them.
    _, kept = _split_divisible(base, divisor * modulus) if modulus.is_Integer else (0, base)
    ub = upper_bound(kept, ranges)
    if ub is not None and ub < divisor * modulus:
        return _simplify_floordiv(kept, divisor, ranges)
    return ModularIndexing(kept, divisor, modulus)


def _combine_digit_pairs(expr: sympy.Expr) -> sympy.Expr:
    """Merge adjacent digits of the same number back into one.

    ``c*n*FloorDiv(x, a*n) + c*ModularIndexing(x, a, n)`` -> ``c*FloorDiv(x, a)`` and
    ``c*n*ModularIndexing(x, a*n, m) + c*ModularIndexing(x, a, n)`` ->
    ``c*ModularIndexing(x, a, n*m)``.

    This is what turns a reshape that splits a dim and then merges it back into the plain
    index again.
    """
    terms = list(sympy.Add.make_args(expr))
    changed = True
    while changed:
        changed = False
        for t_mod in terms:
            c_mod, mod = t_mod.as_coeff_Mul()
            if not isinstance(mod, ModularIndexing):
                continue
            x, a, n = mod.args
            for t_hi in terms:
                c_hi, hi = t_hi.as_coeff_Mul()
                if t_hi is t_mod or c_hi != c_mod * n or hi.args[:1] != (x,):
                    continue
                if isinstance(hi, FloorDiv) and hi.args[1] == a * n:
                    merged = FloorDiv(x, a)
                elif isinstance(hi, ModularIndexing) and hi.args[1] == a * n:
                    merged = ModularIndexing(x, a, n * hi.args[2])
                else:
                    continue
                terms.remove(t_mod)
                terms.remove(t_hi)
                terms.append(c_mod * merged)
                changed = True
                break
            if changed:
                break
    return sympy.Add(*terms)


def simplify(expr: sympy.Expr, ranges: Mapping[sympy.Symbol, sympy.Expr]) -> sympy.Expr:
    """Range-aware simplification of an index expression (bottom-up, to a fixed point).

    Memoized: the result depends on ``expr`` and the ranges of its own symbols only, and a
    model's repeated blocks ask for the same index expressions kernel after kernel. A
    constant term is set aside first: no rule looks at it (it is no floor or mod, and pairs
    with none), so a stencil's taps, one index at 49 offsets, are simplified once.
    """
    expr = sympy.sympify(expr)
    if is_plain(expr):
        return expr
    offset, rest = expr.as_coeff_Add()
    if not offset.is_Integer:
        offset, rest = sympy.Integer(0), expr
    bounds = tuple(sorted(((s, ranges[s]) for s in free_symbols(rest) if s in ranges),
                          key=lambda pair: str(pair[0])))
    out = _simplify_bounded(rest, bounds)
    return out if offset == 0 else offset + out


def is_plain(expr: sympy.Expr) -> bool:
    """Whether ``expr`` is a sum of products of symbols and numbers: no floor or mod, nothing
    to multiply out, so ``simplify`` gives it back unchanged. Most loads index so (a
    contiguous or strided read, a stencil's tap), and telling takes less than the lookup."""
    return all(factor.is_Atom for term in sympy.Add.make_args(expr)
               for factor in sympy.Mul.make_args(term))


@functools.lru_cache(maxsize=1 << 16)
def free_symbols(expr: sympy.Expr) -> frozenset:
    """``expr.free_symbols``, memoized: sympy walks the expression for it at every call."""
    return frozenset(expr.free_symbols)


def replace_symbols(expr: sympy.Expr, mapping: Mapping[sympy.Symbol, sympy.Expr]) -> sympy.Expr:
    """``expr.xreplace(mapping)`` for a mapping of symbols; ``expr`` itself, without sympy's
    walk, where none of its symbols is replaced."""
    expr = sympy.sympify(expr)
    if free_symbols(expr).isdisjoint(mapping):
        return expr
    return _xreplace(expr, tuple(mapping.items()))


@functools.lru_cache(maxsize=1 << 14)
def _xreplace(expr: sympy.Expr, pairs: tuple) -> sympy.Expr:
    # Memoized: a model's repeated blocks map the same indices the same way (a lowering's
    # views, the fusion planner's group symbols), and sympy rebuilds the expression anew.
    return expr.xreplace(dict(pairs))


@functools.lru_cache(maxsize=1 << 16)
def _simplify_bounded(expr: sympy.Expr, bounds: tuple) -> sympy.Expr:
    ranges = dict(bounds)
    for _ in range(8):
        new = _combine_digit_pairs(_expanded(_simplify_once(expr, ranges)))
        if new == expr:
            return new
        expr = new
    return expr


def _simplify_once(expr, ranges):
    if not expr.args:
        return expr
    args = [_simplify_once(a, ranges) for a in expr.args]
    if isinstance(expr, FloorDiv):
        return _simplify_floordiv(_expanded(args[0]), args[1], ranges)
    if isinstance(expr, ModularIndexing):
        return _simplify_modular(_expanded(args[0]), args[1], args[2], ranges)
    return expr.func(*args)


def _expanded(expr: sympy.Expr) -> sympy.Expr:
    """``sympy.expand(expr)`` where something in it multiplies out, else ``expr`` itself:
    an index is mostly a sum of integer multiples of symbols and of floor/mod terms, which
    ``_simplify_once`` rebuilt from expanded arguments, and sympy's expand walks it whole
    however little there is to do (two thirds of a first lowering's simplification)."""
    for term in sympy.Add.make_args(expr):
        for factor in sympy.Mul.make_args(term):
            if factor.is_Atom or isinstance(factor, (FloorDiv, ModularIndexing)):
                continue
            if factor.is_Pow and factor.base.is_Atom:
                continue
            return sympy.expand(expr)
    return expr


def index_step(index: sympy.Expr, symbol: sympy.Symbol, zero: Mapping) -> int | None:
    """How far apart in memory ``index`` lies for the first two values of ``symbol``, the
    other symbols of ``zero`` at 0 (enough for the affine and floor/mod indexing of views);
    None where that is not a number.

    Example: ``index_step(3*i0 + i1 + 5, i0, {i0: 0, i1: 0}) == 3``.
    """
    _, rest = sympy.sympify(index).as_coeff_Add()   # a constant term moves no step
    return _index_step(rest, symbol, tuple(zero.items()))


@functools.lru_cache(maxsize=1 << 14)
def _index_step(index: sympy.Expr, symbol: sympy.Symbol, zero: tuple) -> int | None:
    # Memoized: the fusion planner asks for each load's steps at every group it tries.
    zero = dict(zero)
    step = sympy.sympify(index.xreplace({**zero, symbol: 1}) - index.xreplace(zero))
    if not step.is_Integer:   # sizes known only at run time may cancel (s0 + 1 - s0)
        step = sympy.simplify(step)
    return int(step) if step.is_Integer else None


def affine_coefficients(expr: sympy.Expr, symbols) -> tuple[sympy.Expr, list[sympy.Expr]] | None:
    """(offset, [coefficient per symbol]) if ``expr`` is affine in ``symbols``, else None.

    Example: ``affine_coefficients(3*i0 + i1 + 5, [i0, i1]) == (5, [3, 1])``.
    """
    # a constant term is no coefficient: set aside, a stencil's taps share one answer
    offset, rest = sympy.sympify(expr).as_coeff_Add()
    found = _affine(rest, tuple(symbols))
    return None if found is None else (offset + found[0], list(found[1]))


@functools.lru_cache(maxsize=1 << 14)
def _affine(expr: sympy.Expr, symbols: tuple) -> tuple[sympy.Expr, tuple] | None:
    """``affine_coefficients``, memoized: a kernel's planning asks it for each load at every
    step (tiling, row order), and a model's kernels share their index expressions."""
    if is_plain(expr):
        return _affine_plain(expr, symbols)
    expr = sympy.expand(expr)
    coeffs = []
    rest = expr
    for s in symbols:
        c = expr.coeff(s)
        if c.free_symbols & set(symbols):
            return None
        coeffs.append(c)
        rest = rest - c * s
    rest = sympy.expand(rest)
    if rest.free_symbols & set(symbols) or rest.has(FloorDiv, ModularIndexing):
        return None
    return rest, tuple(coeffs)


def _affine_plain(expr: sympy.Expr, symbols: tuple) -> tuple[sympy.Expr, tuple] | None:
    """``_affine`` of a sum of products of symbols and numbers (``is_plain``), read off its
    terms: sympy's expand and coeff give the same, walking it once per symbol."""
    wanted = set(symbols)
    parts: dict = {s: [] for s in symbols}
    rest = []
    for term in sympy.Add.make_args(expr):
        factors = sympy.Mul.make_args(term)
        found = [f for f in factors if f in wanted]
        if len(found) > 1:
            return None   # a product of two of the symbols
        if found:
            parts[found[0]].append(sympy.Mul(*[f for f in factors if f is not found[0]]))
        else:
            rest.append(term)
    return sympy.Add(*rest), tuple(sympy.Add(*parts[s]) for s in symbols)


class TritonPrinter(StrPrinter):
    """Prints index expressions as Triton/Python integer arithmetic."""

    def _operand(self, expr) -> str:
        text = self._print(expr)
        return text if expr.is_Atom or isinstance(expr, (FloorDiv, ModularIndexing)) else f"({text})"

    def _print_FloorDiv(self, expr):
        return f"({self._operand(expr.args[0])} // {self._operand(expr.args[1])})"

    def _print_ModularIndexing(self, expr):
        x, a, n = (self._operand(arg) for arg in expr.args)
        inner = x if expr.args[1] == 1 else f"({x} // {a})"
        return f"({inner} % {n})"

    def _print_Pow(self, expr):
        base, exp = expr.args
        if exp.is_Integer and exp > 0:   # Triton has no ** on tensors: s**2 -> s*s
            return "*".join([self._operand(base)] * int(exp))
        raise ValueError(f"cannot print {expr} as Triton index arithmetic")

    def _print_Mul(self, expr):
        return "*".join(self.parenthesize(a, 50) for a in expr.as_ordered_factors())

    # The ShapeEnv's Mod, in sizes the wrapper computes (Longformer returns its padding,
    # ``Mod(4 - Mod(s0, 4), 4)``): StrPrinter writes it as a call, which Python cannot run.
    # Its operands are sizes, never negative, where C's % (Triton's) and Python's agree.
    def _print_Mod(self, expr):
        return f"({self._operand(expr.args[0])} % {self._operand(expr.args[1])})"

    def _print_Max(self, expr):   # a data-dependent stride, Max(1, u0): Python's max
        return f"max({', '.join(self._print(a) for a in expr.args)})"

    def _print_Min(self, expr):
        return f"min({', '.join(self._print(a) for a in expr.args)})"


def texpr(expr: sympy.Expr) -> str:
    """Triton source for an index expression.

    A constant term is printed apart where sympy's printer puts it last, as it does but for
    ``c - k*x`` (which it prints ``c + (-1)*k*x``) and negative powers: a stencil's taps, one
    index at many offsets, print their index once (sympy orders the terms of each anew).

    >>> x = index_symbol("x", 0)
    >>> texpr(x - 16416), texpr(96 - x), texpr(ModularIndexing(x, 1, 96) + 192)
    ('x0 - 16416', '96 + (-1)*x0', '(x0 % 96) + 192')
    """
    expr = sympy.sympify(expr)
    return _printed_apart(*expr.as_coeff_Add()) or _texpr(expr)


def texpr_sum(offset: sympy.Integer, expr: sympy.Expr) -> str:
    """``texpr(offset + expr)`` for an integer ``offset``, the sum not built where its
    constant term is printed apart (a stencil's taps print one index at many offsets).

    >>> x = index_symbol("x", 0)
    >>> texpr_sum(sympy.Integer(-16416), x + 96), texpr_sum(sympy.Integer(-96), x + 96)
    ('x0 - 16320', 'x0')
    """
    inner, rest = expr.as_coeff_Add()
    total = offset + inner
    if total == 0 and not rest.is_Number:
        return _texpr(rest)
    return _printed_apart(total, rest) or texpr(offset + expr)


def _printed_apart(offset: sympy.Expr, rest: sympy.Expr) -> str | None:
    """``rest`` printed, then the constant ``offset``, where that is how sympy prints their
    sum; None where it is not (no constant, or the printer puts it elsewhere)."""
    if not offset.is_Integer or offset == 0 or not _offset_printed_last(offset, rest):
        return None
    return f"{_texpr(rest)} {'-' if offset < 0 else '+'} {abs(int(offset))}"


def _offset_printed_last(offset: sympy.Integer, rest: sympy.Expr) -> bool:
    """Whether sympy prints ``offset + rest`` as ``rest`` and then the constant: its terms
    are ordered by their monomials, a constant's the least, unless a negative power
    (``x/s0``) ranks lower, or it is ``Expr.as_ordered_terms``'s special case of a positive
    number plus a negative multiple of one factor."""
    if rest.is_Number:
        return False
    if offset > 0 and rest.is_Mul and len(rest.args) == 2 and rest.args[0].is_Number \
            and rest.args[0].is_negative:
        return False
    return not _has_power(rest)


@functools.lru_cache(maxsize=1 << 14)
def _has_power(expr: sympy.Expr) -> bool:
    return expr.has(sympy.Pow)


@functools.lru_cache(maxsize=1 << 14)
def _texpr(expr: sympy.Expr) -> str:
    # Memoized: a kernel prints each of its index expressions at every load and mask, and a
    # model's kernels share them; sympy's printer walks the whole expression each time.
    return TritonPrinter().doprint(expr)
