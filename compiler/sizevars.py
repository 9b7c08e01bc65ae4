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
    model's repeated blocks ask for the same index expressions kernel after kernel.
    """
    expr = sympy.sympify(expr)
    bounds = tuple(sorted(((s, ranges[s]) for s in free_symbols(expr) if s in ranges),
                          key=lambda pair: str(pair[0])))
    return _simplify_bounded(expr, bounds)


@functools.lru_cache(maxsize=1 << 16)
def free_symbols(expr: sympy.Expr) -> frozenset:
    """``expr.free_symbols``, memoized: sympy walks the expression for it at every call."""
    return frozenset(expr.free_symbols)


def replace_symbols(expr: sympy.Expr, mapping: Mapping[sympy.Symbol, sympy.Expr]) -> sympy.Expr:
    """``expr.xreplace(mapping)`` for a mapping of symbols; ``expr`` itself, without sympy's
    walk, where none of its symbols is replaced."""
    expr = sympy.sympify(expr)
    return expr if free_symbols(expr).isdisjoint(mapping) else expr.xreplace(mapping)


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
    index = sympy.sympify(index)
    step = sympy.simplify(index.xreplace({**zero, symbol: 1}) - index.xreplace(zero))
    return int(step) if step.is_Integer else None


def affine_coefficients(expr: sympy.Expr, symbols) -> tuple[sympy.Expr, list[sympy.Expr]] | None:
    """(offset, [coefficient per symbol]) if ``expr`` is affine in ``symbols``, else None.

    Example: ``affine_coefficients(3*i0 + i1 + 5, [i0, i1]) == (5, [3, 1])``.
    """
    found = _affine(sympy.sympify(expr), tuple(symbols))
    return None if found is None else (found[0], list(found[1]))


@functools.lru_cache(maxsize=1 << 14)
def _affine(expr: sympy.Expr, symbols: tuple) -> tuple[sympy.Expr, tuple] | None:
    """``affine_coefficients``, memoized: a kernel's planning asks it for each load at every
    step (tiling, row order), and a model's kernels share their index expressions."""
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
    """Triton source for an index expression."""
    return _texpr(sympy.sympify(expr))


@functools.lru_cache(maxsize=1 << 14)
def _texpr(expr: sympy.Expr) -> str:
    # Memoized: a kernel prints each of its index expressions at every load and mask, and a
    # model's kernels share them; sympy's printer walks the whole expression each time.
    return TritonPrinter().doprint(expr)
