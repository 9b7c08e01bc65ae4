"""A cost model that orders candidates before any is timed, so the likely best run first.

Successive halving (``halving``) gives every candidate a first short timing and the roofline
stop ends a search as soon as one candidate is close enough to the copy bandwidth: the
sooner a good config is met, the less is timed. The model needs only the kernel's sizes,
the bytes its pointers move and the card's SM count and bandwidth; it is a ranking, not a
prediction (the clock decides):

  * memory time: the bytes moved (a GEMM re-reads A once per column of tiles and B once
    per row of tiles) over the bandwidth, scaled up by the lanes a block masks off past
    the sizes (``padding``) and down by how few warps are resident to hide latency;
  * waves: programs over the slots the card holds at once (warps per SM, blocks per SM);
    a last, partly filled wave costs as much as a full one;
  * a GEMM's math: its padded flops over the tensor-core peak, per wave of tiles;
  * a fixed launch cost per wave, which favours fewer, larger blocks when all else is equal.

Example:
    >>> from compiler.kernels.spec import Config
    >>> good, waste = Config(XBLOCK=1024, num_warps=4), Config(XBLOCK=8192, num_warps=1)
    >>> rank("pointwise1d", (5000,), [waste, good], bytes_moved=40_000)[0] == good
    True
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

from ..kernels.spec import Config
from .spaces import GEMM_KINDS, grid


@dataclass(frozen=True)
class Machine:
    """What the model knows of a card (defaults: an H200)."""
    sms: int = 132
    gbps: float = 4300.0              # copy bandwidth, bytes read + written
    tflops: float = 800.0             # dense tensor-core peak of 16-bit operands
    warps_per_sm: int = 64
    blocks_per_sm: int = 32
    warps_to_hide_latency: int = 16   # resident warps per SM that keep HBM busy
    wave_us: float = 1.0              # a wave's fixed cost: scheduling, prologue, tail


def padding(numels: Sequence[int], blocks: Sequence[int]) -> float:
    """Lanes launched over lanes needed (>= 1): what masking wastes.

    >>> padding((1000,), (1024,))
    1.024
    """
    launched = math.prod(math.ceil(n / b) * b for n, b in zip(numels, blocks))
    return launched / max(1, math.prod(numels))


def _waves(machine: Machine, programs: int, num_warps: int) -> tuple[int, float]:
    """(waves, resident warps per SM while running)."""
    per_sm = max(1, min(machine.blocks_per_sm, machine.warps_per_sm // num_warps))
    slots = machine.sms * per_sm
    waves = max(1, math.ceil(programs / slots))
    resident = min(programs, slots) / machine.sms * num_warps
    return waves, resident


def _blocks_over(kind: str, config: Config) -> tuple[int, ...]:
    return {"pointwise1d": (config.XBLOCK,), "pointwise2d": (config.XBLOCK, config.YBLOCK),
            "reduction_persistent": (config.XBLOCK, config.RBLOCK),
            "reduction_looped": (config.XBLOCK, config.RBLOCK)}[kind]


def estimate_ms(kind: str, numels: Sequence[int], config: Config, bytes_moved: int,
                machine: Machine = Machine(), element_bytes: int = 2) -> float:
    """The model's time for ``config`` (see the module doc); 0 for a GEMM's extern path,
    which is always timed first (it is what the template must beat)."""
    if config.extern:
        return 0.0
    numels = [int(n) for n in numels]
    programs = math.prod(grid(kind, numels, config))
    waves, resident = _waves(machine, programs, config.num_warps)
    hidden = min(1.0, resident / machine.warps_to_hide_latency)
    overhead = waves * machine.wave_us * 1e-3
    if kind in GEMM_KINDS:   # a conv: the same tiles, its A gathered from the input
        b, m, n, k = numels
        bm, bn, bk = config.BLOCK_M, config.BLOCK_N, config.BLOCK_K
        moved = b * (m * k * math.ceil(n / bn) + k * n * math.ceil(m / bm)) * element_bytes
        flops = 2 * b * padding((m, n, k), (bm, bn, bk)) * m * n * k
        per_wave = min(programs, machine.sms * max(1, machine.warps_per_sm // config.num_warps))
        fill = programs / (waves * per_wave)
        math_ms = flops / (machine.tflops * 1e12) * 1e3 / fill
        return max(math_ms, moved / (machine.gbps * 1e9) * 1e3 / hidden) + overhead
    pad = padding(numels, _blocks_over(kind, config))
    return bytes_moved * pad / (machine.gbps * 1e9) * 1e3 / hidden + overhead


def rank(kind: str, numels: Sequence[int], configs: Iterable[Config], bytes_moved: int,
         machine: Machine = Machine(), element_bytes: int = 2) -> list[Config]:
    """``configs`` cheapest first by ``estimate_ms`` (ties keep their order)."""
    configs = list(dict.fromkeys(configs))
    return sorted(configs, key=lambda c: estimate_ms(kind, numels, c, bytes_moved, machine,
                                                     element_bytes))
