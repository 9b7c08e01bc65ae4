"""Op-table cases for scans (cumsum, cumprod, logcumsumexp) and scatters (index_put,
scatter, scatter_add, scatter_reduce, index_add, index_copy), kept apart from ``optable.py``
for size; ``optable`` calls ``register()`` while it builds its table.

float16 runs on CPU through cases with a float16 argument (``*_f16``); bfloat16 runs on the
GPU only (every case with a float argument runs in bfloat16 there).

Example:
    >>> import optable
    >>> optable.CASES["cumsum"].family
    'scan'
"""
from __future__ import annotations

import torch


def register() -> None:
    """Add the scan and scatter cases to ``optable.CASE_LIST`` (called by optable itself;
    optable's names are imported here, not at the top, so either module may load first)."""
    _scans()
    _scatters()


def _scans() -> None:
    from optable import BOOL, I32, I64, SPECIAL, ST, Arg, S, T, X, case, section
    F16, POS = Arg("normal", torch.float16), Arg("positive")

    # --- scans: one row-scan kernel along any dim; persistent rows, looped rows (> 16384)
    section("scan")
    case("cumsum", lambda a: a.cumsum(-1),
         shapes=((S(),), (S(7),), (S(33, 17),), (T(17, 33),), (S(4, 1, 9),), (ST(5, 12),)), tol="accumulate")
    case("cumsum_dim0", lambda a: a.cumsum(0), shapes=((S(33, 17),), (T(9, 13),)), tol="accumulate")
    case("cumsum_middle", lambda a: a.cumsum(1), shapes=((S(3, 5, 4),),), tol="accumulate")
    case("cumsum_prologue", lambda a, b: (a * b + 1).exp().cumsum(0), (X, X),
         ((S(9, 13), S(13)),), tol="accumulate")
    case("cumsum_looped", lambda a: a.cumsum(1), (POS,), ((S(2, 20000),),), tol="accumulate")
    case("cumsum_int", lambda a: a.cumsum(0), (I32,), ((S(33, 17),), (T(5, 6),)))
    case("cumsum_bool", lambda a: a.cumsum(1), (BOOL,), ((S(9, 13),),))
    case("cumsum_dtype", lambda a: a.cumsum(1, dtype=torch.float64), shapes=((S(9, 13),),))
    case("cumsum_f16", lambda a: a.cumsum(-1), (F16,), ((S(33, 17),), (T(9, 13),)), tol="accumulate")
    case("cumsum_nan", lambda a: a.cumsum(1), (SPECIAL,), ((S(9, 13),),))
    case("cumprod", lambda a: a.cumprod(1), (Arg("unit"),), ((S(7, 9),), (T(9, 7),), (S(1, 5),)))
    case("cumprod_int", lambda a: a.cumprod(0), (I64,), ((S(6, 5),),))
    case("cumprod_f16", lambda a: a.cumprod(0), (Arg("unit", torch.float16),), ((S(9, 13),),))
    case("logcumsumexp", lambda a: a.logcumsumexp(0),
         shapes=((S(33, 17),), (T(9, 13),), (S(7),)), tol="accumulate")
    case("logcumsumexp_last", lambda a: a.logcumsumexp(-1), shapes=((S(4, 3, 9),),),
         tol="accumulate")
    case("logcumsumexp_looped", lambda a: a.logcumsumexp(-1), shapes=((S(1, 17000),),),
         tol="accumulate")
    case("logcumsumexp_special", lambda a: a.logcumsumexp(1), (SPECIAL,), ((S(9, 13),),),
         tol="approx")
    case("logcumsumexp_f16", lambda a: a.logcumsumexp(1), (F16,), ((S(9, 13),),),
         tol="accumulate")


def _scatters() -> None:
    from optable import I32, I64, Arg, S, T, X, case, section
    F16 = Arg("normal", torch.float16)
    aten = torch.ops.aten

    # --- scatters: a copy of self, then one kernel over the source elements that stores or
    # atomically adds through loaded indices. Stores use distinct indices ("rowperm": eager
    # leaves duplicates unspecified); accumulating cases draw duplicates and negative indices.
    section("scatter")

    def _idx(domain: str, dtype=torch.int64) -> Arg:
        return Arg(domain, dtype)

    case("index_put", lambda a, i, v: a.index_put((i,), v), (X, _idx("rowperm6"), X),
         ((S(6, 5), S(3), S(3, 5)), (T(6, 5), S(4), S(5)), (S(6), S(2), S())), tol="exact")
    case("index_put_accumulate", lambda a, i, v: a.index_put((i,), v, accumulate=True),
         (X, _idx("wrapindex6"), X), ((S(6, 5), S(9), S(9, 5)), (S(6, 5), S(4), S(1))), tol="accumulate")
    case("index_put_two_indices", lambda a, i, j, v: a.index_put((i, j), v, accumulate=True),
         (X, _idx("index4"), _idx("wrapindex5", torch.int32), X),
         ((S(4, 5, 3), S(4, 1), S(3), S(4, 3, 3)),), tol="accumulate")
    case("index_put_middle_dim", lambda a, i, v: aten.index_put(a, [None, i], v, True),
         (X, _idx("index7"), X), ((S(3, 7, 4), S(5), S(3, 5, 4)),), tol="accumulate")
    case("index_put_int", lambda a, i, v: a.index_put((i,), v, accumulate=True),
         (I64, _idx("index6"), I64), ((S(6, 5), S(9), S(9, 5)),))
    case("index_put_f16", lambda a, i, v: a.index_put((i,), v, accumulate=True),
         (F16, _idx("index6"), F16), ((S(6, 5), S(9), S(9, 5)),), tol="accumulate")
    case("index_copy", lambda a, i, v: a.index_copy(1, i, v), (X, _idx("rowperm7"), X),
         ((S(3, 7, 4), S(5), S(3, 5, 4)),), tol="exact")
    case("index_add", lambda a, i, v: a.index_add(0, i, v, alpha=0.5), (X, _idx("index6"), X),
         ((S(6, 5), S(9), S(9, 5)), (T(6, 5), S(3), S(3, 5))), tol="accumulate")
    case("scatter_value", lambda a, i: a.scatter(1, i, 2.5), (X, _idx("rowperm6")),
         ((S(5, 6), S(5, 3)), (T(5, 6), S(5, 2))), tol="exact")
    case("scatter_src", lambda a, i, b: a.scatter(1, i, b), (X, _idx("rowperm6"), X),
         ((S(5, 6), S(4, 3), S(5, 7)),), tol="exact")
    case("scatter_dim0", lambda a, i, b: a.scatter(0, i, b), (X, _idx("rowperm5"), X),
         ((S(5, 6), T(3, 6), S(3, 6)),), tol="exact")
    case("scatter_add", lambda a, i, b: a.scatter_add(1, i, b), (X, _idx("index6"), X),
         ((S(5, 6), S(5, 9), S(5, 9)), (T(5, 6), S(4, 3), S(5, 7))), tol="accumulate")
    case("scatter_add_int", lambda a, i, b: a.scatter_add(0, i, b), (I32, _idx("index5"), I32),
         ((S(5, 6), S(9, 6), S(9, 6)),))
    case("scatter_add_f16", lambda a, i, b: a.scatter_add(1, i, b), (F16, _idx("index6"), F16),
         ((S(5, 6), S(5, 9), S(5, 9)),), tol="accumulate")
    case("scatter_reduce_sum", lambda a, i, b: a.scatter_reduce(1, i, b, "sum"),
         (X, _idx("index6"), X), ((S(5, 6), S(5, 9), S(5, 9)),), tol="accumulate")
    case("scatter_reduce_sum_exclude",
         lambda a, i, b: a.scatter_reduce(1, i, b, "sum", include_self=False),
         (X, _idx("index6"), X), ((S(5, 6), S(5, 4), S(5, 4)),), tol="accumulate")
    case("scatter_after_math", lambda a, i, b: (a.exp().scatter_add(1, i, b * 2) + 1).sum(1),
         (X, _idx("index6"), X), ((S(5, 6), S(5, 9), S(5, 9)),), tol="accumulate")
    # in place into a graph input (the test compares every input with eager's after the call)
    case("index_copy_inplace", lambda a, i, v: a.index_copy_(0, i, v), (X, _idx("rowperm6"), X),
         ((S(6, 5), S(3), S(3, 5)),), kernels="any", tol="exact")
    case("index_put_inplace_accumulate",
         lambda a, i, v: (a.index_put_((i,), v, accumulate=True), a * 2)[1],
         (X, _idx("wrapindex6"), X), ((S(6, 5), S(9), S(9, 5)),), kernels="any", tol="accumulate")
