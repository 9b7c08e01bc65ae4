"""Op-table cases for scans (cumsum, cumprod, logcumsumexp) and scatters (index_put,
scatter, scatter_add, scatter_reduce, index_add, index_copy), kept apart from ``optable.py``
for size; ``optable`` imports this module, which registers its cases into the same table.

float16 runs on CPU through cases with a float16 argument (``*_f16``); bfloat16 runs on the
GPU only (every case with a float argument runs in bfloat16 there): Triton's interpreter
rounds casts to bfloat16 wrongly (``optable_known.KNOWN_BUGS``).

Example:
    >>> import optable
    >>> optable.CASES["cumsum"].family
    'scan'
"""
from __future__ import annotations

import torch

from optable import BOOL, I32, I64, SPECIAL, ST, Arg, S, T, X, case, section

F16 = Arg("normal", torch.float16)
POS = Arg("positive")

# --- scans: one row-scan kernel along any dim; persistent rows, looped rows (> 16384)
section("scan")
case("cumsum", lambda a: a.cumsum(-1),
     shapes=((S(),), (S(7),), (S(33, 17),), (T(17, 33),), (S(4, 1, 9),), (ST(5, 12),)))
case("cumsum_dim0", lambda a: a.cumsum(0), shapes=((S(33, 17),), (T(9, 13),)))
case("cumsum_middle", lambda a: a.cumsum(1), shapes=((S(3, 5, 4),),))
case("cumsum_prologue", lambda a, b: (a * b + 1).exp().cumsum(0), (X, X),
     ((S(9, 13), S(13)),), tol="approx")
case("cumsum_looped", lambda a: a.cumsum(1), (POS,), ((S(2, 20000),),), tol="approx")
case("cumsum_int", lambda a: a.cumsum(0), (I32,), ((S(33, 17),), (T(5, 6),)))
case("cumsum_bool", lambda a: a.cumsum(1), (BOOL,), ((S(9, 13),),))
case("cumsum_dtype", lambda a: a.cumsum(1, dtype=torch.float64), shapes=((S(9, 13),),))
case("cumsum_f16", lambda a: a.cumsum(-1), (F16,), ((S(33, 17),), (T(9, 13),)))
case("cumsum_nan", lambda a: a.cumsum(1), (SPECIAL,), ((S(9, 13),),))
case("cumprod", lambda a: a.cumprod(1), (Arg("unit"),), ((S(7, 9),), (T(9, 7),), (S(1, 5),)))
case("cumprod_int", lambda a: a.cumprod(0), (I64,), ((S(6, 5),),))
case("cumprod_f16", lambda a: a.cumprod(0), (Arg("unit", torch.float16),), ((S(9, 13),),))
case("logcumsumexp", lambda a: a.logcumsumexp(0),
     shapes=((S(33, 17),), (T(9, 13),), (S(7),)), tol="approx")
case("logcumsumexp_last", lambda a: a.logcumsumexp(-1), shapes=((S(4, 3, 9),),), tol="approx")
case("logcumsumexp_looped", lambda a: a.logcumsumexp(-1), shapes=((S(2, 20000),),),
     tol="approx")
case("logcumsumexp_special", lambda a: a.logcumsumexp(1), (SPECIAL,), ((S(9, 13),),),
     tol="approx")
case("logcumsumexp_f16", lambda a: a.logcumsumexp(1), (F16,), ((S(9, 13),),), tol="approx")
