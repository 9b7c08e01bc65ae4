"""Drawing the op table's inputs: shapes with their memory layouts, value domains, seeds.

A ``Shape`` is a logical size plus how the tensor sits in memory (contiguous, transposed,
step-sliced); an ``Arg`` says which values to draw (a domain) and in which dtype. Every draw
is from a generator seeded per test (``generator``), never zeros.

Example:
    >>> gen = torch.Generator().manual_seed(0)
    >>> tuple(make_tensor(Arg(), T(3, 4), torch.float32, "cpu", gen).stride())
    (1, 3)
"""
from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass(frozen=True)
class Shape:
    """A logical shape and how the tensor is laid out in memory.

    ``layout``: "contig"; "t" (allocated with the dims reversed, then permuted back, so the
    strides run the other way); "step" (allocated with the last dim doubled, then sliced
    ``[..., ::2]``, so the last stride is 2 and the storage has holes).
    """
    size: tuple[int, ...]
    layout: str = "contig"

    def label(self) -> str:
        text = "x".join(map(str, self.size)) or "scalar"
        return text + {"contig": "", "t": "T", "step": "S"}[self.layout]


def S(*size: int) -> Shape:
    return Shape(tuple(size))


def T(*size: int) -> Shape:
    return Shape(tuple(size), "t")


def ST(*size: int) -> Shape:
    return Shape(tuple(size), "step")


@dataclass(frozen=True)
class Arg:
    """How to draw one input: a value domain and a dtype (None: the case's float dtype)."""
    domain: str = "normal"
    dtype: torch.dtype | None = None


def _draw(domain: str, numel: int, gen: torch.Generator) -> torch.Tensor:
    """``numel`` float64 values from ``domain`` (never all zeros)."""
    def u(lo, hi):
        return torch.rand(numel, generator=gen, dtype=torch.float64) * (hi - lo) + lo

    def ints(lo, hi):
        return torch.randint(lo, hi, (numel,), generator=gen).double()

    if domain == "normal":
        return torch.randn(numel, generator=gen, dtype=torch.float64) * 2
    if domain == "positive":      # log, sqrt, rsqrt, pow with a float exponent
        return u(0.1, 4.0)
    if domain == "nonzero":       # divisors: |b| >= 0.5, either sign
        sign = torch.where(torch.rand(numel, generator=gen) < 0.5, -1.0, 1.0).double()
        return sign * u(0.5, 3.0)
    if domain == "pow2":          # exact divisors (+-1/4 .. +-8): a / b is never rounded
        sign = torch.where(torch.rand(numel, generator=gen) < 0.5, -1.0, 1.0).double()
        return sign * 2.0 ** ints(-2, 4)
    if domain == "unit":          # asin, acos, atanh, erfinv: inside (-1, 1)
        return u(-0.95, 0.95)
    if domain == "ge1":           # acosh
        return u(1.0, 5.0)
    if domain == "gt_minus1":     # log1p
        return u(-0.9, 4.0)
    if domain == "halves":        # exact .5 ties for round/floor/ceil/trunc
        return ints(-12, 13) / 2
    if domain == "intvalued":     # few distinct values, so eq/ne/le/ge hit equal pairs
        return ints(-2, 3)
    if domain == "sparse":        # about half zeros, for logical ops and casts to bool
        keep = torch.rand(numel, generator=gen) < 0.5
        return torch.randn(numel, generator=gen, dtype=torch.float64) * keep
    if domain == "wide":          # float -> int casts: values past +-1 that truncate
        return torch.randn(numel, generator=gen, dtype=torch.float64) * 60
    if domain == "special":       # NaN / +inf / -inf sprinkled over normal values
        x = torch.randn(numel, generator=gen, dtype=torch.float64) * 2
        pick = torch.randint(0, 6, (numel,), generator=gen)
        x[pick == 0] = math.nan
        x[pick == 1] = math.inf
        x[pick == 2] = -math.inf
        return x
    if domain == "int":
        return ints(-20, 21)
    if domain == "intnz":         # integer divisors
        sign = torch.where(torch.rand(numel, generator=gen) < 0.5, -1, 1).double()
        return sign * ints(1, 7)
    if domain == "smallpos":      # integer exponents
        return ints(0, 4)
    if domain == "bits":
        return ints(-(1 << 20), 1 << 20)
    if domain == "bool":
        return ints(0, 2)
    if domain.startswith("index"):     # "index5": valid indices 0..4 into a dim of size 5
        return ints(0, int(domain[5:]))
    if domain.startswith("wrapindex"):  # "wrapindex5": -5..4, negative ones count from the end
        n = int(domain[9:])
        return ints(-n, n)
    raise ValueError(f"unknown input domain {domain!r}")


def _row_permutations(n: int, alloc: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """"rowperm<n>": indices into a dim of size n, distinct along the allocated last dim
    (a scatter that stores must not write one place twice: eager leaves that unspecified)."""
    rows = math.prod(alloc[:-1]) if alloc else 1
    width = alloc[-1] if alloc else 1
    perms = [torch.randperm(n, generator=gen)[:width] for _ in range(rows)]
    return torch.stack(perms).double().reshape(alloc)


def make_tensor(arg: Arg, shape: Shape, dtype: torch.dtype, device: str,
                gen: torch.Generator) -> torch.Tensor:
    """One input drawn from ``gen`` (a CPU generator), laid out as ``shape`` says."""
    size = shape.size
    if shape.layout == "t":
        alloc = tuple(reversed(size))
    elif shape.layout == "step":
        alloc = size[:-1] + (2 * size[-1],)
    else:
        alloc = size
    if arg.domain.startswith("rowperm"):
        values = _row_permutations(int(arg.domain[7:]), alloc, gen)
    else:
        values = _draw(arg.domain, math.prod(alloc), gen).reshape(alloc)
    dtype = arg.dtype or dtype
    t = (values != 0) if dtype == torch.bool else values.to(dtype)
    t = t.to(device)
    if shape.layout == "t":
        t = t.permute(*reversed(range(len(size))))
    elif shape.layout == "step":
        t = t[..., ::2]
    assert tuple(t.shape) == size
    return t


def generator() -> tuple[torch.Generator, int]:
    """A CPU generator for one test, and its seed: random per run (inputs are fresh each
    time), or ``KILN_TEST_SEED`` to replay the failure a test message reported."""
    seed = int(os.environ.get("KILN_TEST_SEED") or random.SystemRandom().randrange(2**31))
    return torch.Generator().manual_seed(seed), seed


def make_inputs(case, shapes: Sequence[Shape], dtype: torch.dtype, device: str,
                gen: torch.Generator) -> list[torch.Tensor]:
    """One tensor per ``case.args`` (an ``optable.OpCase``), at ``shapes``."""
    return [make_tensor(a, s, dtype, device, gen) for a, s in zip(case.args, shapes)]
