"""Launch heuristics: the config a kernel runs with when no tuned trial chose one.

``launch_config`` gives the heuristic for a kernel kind at its sizes; ``choose_launch`` takes
a tuned config instead where one can run the kernel. Both return a ``LaunchConfig`` whose
keyword arguments are in the order the wrapper passes them. autotune's ``default_config``
delegates here, so the default a tuner compares against is the config the wrapper launches.

Example:
    >>> from compiler.config import CompilerOptions
    >>> from compiler.kernels.spec import KernelKind
    >>> launch = launch_config(KernelKind.POINTWISE_1D, (4096,), CompilerOptions(), "cuda")
    >>> launch.params, launch.grid
    ((('XBLOCK', 1024), ('num_warps', 4)), (4,))
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import sympy

from ..config import CompilerOptions
from ..kernels.spec import KernelKind, LaunchConfig
from ..sizevars import texpr

# The interpreter walks the grid in Python: one big block is much faster than many small ones.
INTERPRETER_MAX_BLOCK = 1 << 16
MAX_GRID_Y = 65535
MIN_DOT = 16          # tl.dot needs every block dim >= 16
MATMUL_BLOCKS = KernelKind.MATMUL.blocks


def next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def _block(numel: sympy.Expr, cap: int, floor: int = 1) -> int:
    """A power-of-two block covering ``numel`` up to ``cap`` (``cap`` when only known at run time)."""
    numel = sympy.sympify(numel)
    return max(floor, min(next_pow2(numel), cap)) if numel.is_Integer else cap


def grid_axis(numel: sympy.Expr, block: int) -> int | str:
    """Programs along one axis: a number, or an expression of run-time sizes (source text)."""
    numel = sympy.sympify(numel)
    if numel.is_Integer:
        return max(1, math.ceil(int(numel) / block))
    return f"(({texpr(numel)}) + {block - 1}) // {block}"


# A stencil's tile (channels by positions): each element does a load and an FMA per tap,
# so a smaller tile than a copy's keeps more programs in flight. 32x32 against 64x64 on an
# H100: 1.41x faster at 96 channels, 56x56, 7x7 (ConvNeXt-T's first stage) and 1.26x at
# 768 channels, 7x7, within 10% either way at the other 5x5 and 7x7 shapes of ConvNeXt-T
# and EfficientNet-B0; 16x16 lost at all of them. benchmarks/results/2026-12-07/s9/3/
# depthwise_tiled.txt.
STENCIL_TILE = 32
# Elements a thread computes in a stencil kernel: fewer than a copy's, since every element
# holds a sum over its taps. On an H100 (bf16, batch 32, s10 call 1's depthwise_tiled.txt):
# the 32x32 tile at 4 a thread (8 warps) took 0.92-0.96x the time of 8 a thread at six of
# the seven 2-D shapes (1.08x at 768 channels, 7x7) and beat 2 a thread at all seven; the
# 1-D kernel's 1024 at 2 a thread (16 warps) took 0.78-0.94x the time of 8 a thread at all
# ten 3x3, 5x5 and 7x7 shapes.
STENCIL_PER_THREAD = {2: 4, 1: 2}


def launch_config(kind: KernelKind, numels: Sequence, options: CompilerOptions,
                  device_type: str, rows_across: bool = False,
                  stencil: bool = False) -> LaunchConfig:
    """Heuristic launch parameters (the config used when tuning is off). ``rows_across``: a
    row kernel whose rows lie across memory, adjacent rows adjacent; ``stencil``: a kernel
    of per-channel taps, 1-D or 2-D (both ``KernelSpec``'s flags)."""
    numels = [sympy.sympify(n) for n in numels]
    stencil = stencil and device_type != "cpu"    # the interpreter's blocks are its own
    if kind.is_gemm:
        return matmul_launch_config(numels, device_type, kind)
    if kind.is_reduction:
        return _reduction_config(kind, numels, device_type, rows_across)
    if kind == KernelKind.POINTWISE_2D:
        xnumel, ynumel = numels
        if device_type == "cpu":
            x = _block(xnumel, 256)
            y = _block(ynumel, INTERPRETER_MAX_BLOCK // x)
        else:
            tile_x, tile_y = (STENCIL_TILE,) * 2 if stencil else (options.tile_x, options.tile_y)
            x, y = _block(xnumel, tile_x), _block(ynumel, tile_y)
        if ynumel.is_Integer and int(ynumel) > MAX_GRID_Y * y:   # grid y is at most 65535
            y = next_pow2(math.ceil(int(ynumel) / MAX_GRID_Y))
        warps = (_stencil_warps(x * y, 2) if stencil
                 else max(1, min(options.num_warps, x * y // 256)))
        return LaunchConfig((("XBLOCK", x), ("YBLOCK", y), ("num_warps", warps)),
                            (grid_axis(xnumel, x), grid_axis(ynumel, y)))
    (xnumel,) = numels
    x = _block(xnumel, INTERPRETER_MAX_BLOCK if device_type == "cpu" else options.xblock, 16)
    warps = (_stencil_warps(x, 1) if stencil else max(1, min(options.num_warps, x // 256)))
    return LaunchConfig((("XBLOCK", x), ("num_warps", warps)), (grid_axis(xnumel, x),))


def _stencil_warps(block: int, dims: int) -> int:
    """Warps for a stencil kernel's ``block`` elements a program (``STENCIL_PER_THREAD``)."""
    return max(1, min(16, block // (32 * STENCIL_PER_THREAD[dims])))


# Rows lying across memory (a channels-last mean over H and W) are read coalesced only by
# several rows a program: adjacent rows are adjacent elements, and 16 bf16 fill a sector.
# No more than that: rows/16 programs is already few where rows are few (2048 channels x
# batch in EfficientNet's first squeeze-excite: 128 programs).
SECTOR_ROWS = 16


def rows_per_program(kind: KernelKind, numels, device_type: str = "cuda",
                     rows_across: bool = False) -> tuple[int, int]:
    """(XBLOCK, RBLOCK) of a row kernel's heuristic config: rows a program reduces at once."""
    xnumel, rnumel = numels
    if kind == KernelKind.REDUCTION_PERSISTENT:
        r = next_pow2(rnumel)
        # long rows: several rows a program and many warps (swept on an H100: XBLOCK=4 with
        # 16-32 warps beat one row with 8 warps by 2.7-3.2x for rows of 3136)
        budget = INTERPRETER_MAX_BLOCK if device_type == "cpu" else (16384 if r >= 2048 else 4096)
        if rows_across:
            budget = max(budget, SECTOR_ROWS * r)
        return _block(xnumel, max(1, budget // r)), r
    tile = 4096 if device_type == "cpu" else 2048
    if rows_across:
        x = _block(xnumel, SECTOR_ROWS)
        return x, max(1, tile // x)
    return 1, tile


def _reduction_config(kind: KernelKind, numels, device_type: str,
                      rows_across: bool = False) -> LaunchConfig:
    x, r = rows_per_program(kind, numels, device_type, rows_across)
    xnumel = numels[0]
    warps = max(1, min(16 if x * r >= 8192 else 8, x * r // 256))
    return LaunchConfig((("XBLOCK", x), ("RBLOCK", r), ("num_warps", warps)),
                        (grid_axis(xnumel, x),))


def choose_launch(kind: KernelKind, numels: Sequence, options: CompilerOptions,
                  device_type: str, tuned: Mapping[str, int] | None = None,
                  rows_across: bool = False, stencil: bool = False) -> LaunchConfig:
    """The tuned config when it can run this kernel, else ``launch_config``'s heuristic."""
    if kind.is_gemm:
        return choose_matmul_launch(numels, device_type, tuned, kind)
    heuristic = launch_config(kind, numels, options, device_type, rows_across, stencil)
    if not tuned:
        return heuristic
    blocks = {k: int(v) for k, v in tuned.items() if k.endswith("BLOCK")}
    if set(blocks) != set(kind.blocks):
        return heuristic
    numels = [sympy.sympify(n) for n in numels]
    if kind == KernelKind.REDUCTION_PERSISTENT and blocks["RBLOCK"] < int(numels[1]):
        return heuristic    # a persistent kernel must hold the whole row
    params = [*blocks.items(),
              ("num_warps", int(tuned.get("num_warps", heuristic.kwargs()["num_warps"])))]
    if "num_stages" in tuned:
        params.append(("num_stages", int(tuned["num_stages"])))
    if kind == KernelKind.POINTWISE_2D:
        grid = (grid_axis(numels[0], blocks["XBLOCK"]), grid_axis(numels[1], blocks["YBLOCK"]))
    else:
        grid = (grid_axis(numels[0], blocks["XBLOCK"]),)
    return LaunchConfig(tuple(params), grid, tuned=True)


# ----------------------------------------------------------------------------- GEMM template
def _fit(size: int, cap: int) -> int:
    """A power-of-two block of at least ``MIN_DOT`` covering ``size`` up to ``cap``."""
    return max(MIN_DOT, min(cap, 1 << max(0, (int(size) - 1).bit_length())))


def matmul_grid(numels, block_m: int, block_n: int) -> tuple[int, int]:
    batch, m, n, _ = (int(v) for v in numels)
    return (math.ceil(m / block_m) * math.ceil(n / block_n), batch)


def matmul_launch_config(numels, device_type: str,
                         kind: KernelKind = KernelKind.MATMUL) -> LaunchConfig:
    """The GEMM template's heuristic (tuning off). On a GPU: 128x128 tiles, BLOCK_K 32, 3
    stages -- a float32 kernel then needs 96 KiB of shared memory, under every listed
    target's limit (the default must build everywhere). Under the interpreter, which runs
    each program in Python: as few programs as possible. A conv: ``conv_blocks``."""
    _, m, n, k = (int(v) for v in numels)
    if device_type == "cpu":
        blocks = (_fit(m, 64), _fit(n, 64), _fit(k, 64))
        warps, stages = 4, 1
    elif kind == KernelKind.CONV:
        blocks, warps, stages = conv_blocks(m, n, k)
    else:
        blocks = (_fit(m, 128), _fit(n, 128), _fit(k, 32))
        warps, stages = (8 if blocks[0] * blocks[1] >= 128 * 128 else 4), 3
    # GROUP_M 8, or the tile rows when fewer: the same schedule, as the tuner names it
    group = min(8, 1 << max(0, (math.ceil(m / blocks[0]) - 1).bit_length()))
    params = (*zip(MATMUL_BLOCKS, blocks + (group,)), ("num_warps", warps),
              ("num_stages", stages))
    return LaunchConfig(params, matmul_grid(numels, *blocks[:2]))


# Half the SMs of an H100/H200 (132): a conv grid with fewer 128x128 tiles takes 64-row ones.
FEW_TILES = 66


def conv_blocks(m: int, n: int, k: int) -> tuple[tuple[int, int, int], int, int]:
    """((BLOCK_M, BLOCK_N, BLOCK_K), warps, stages) of the conv template on a GPU (Hopper).

    BLOCK_N covers the output channels up to 128 (64 for ResNet's first stage, not a half
    empty 128). BLOCK_K is 64 where K (C_in*KH*KW) is a multiple of 64 -- every ResNet conv
    but the stem -- so that a window's channels come in few wide steps; else 32, which
    wastes less of a short or ragged K (the stem's 147). Stages fill a similar shared memory
    either way: 96 KiB for 128x128x64 x 3, under every listed target's limit.

    Where 128x128 tiles would leave most of the SMs idle (fewer than ``FEW_TILES``: ResNet's
    last stage, 1568 rows by 512 at batch 32), BLOCK_M is 64 with 4 warps and 4 stages, doubling the
    programs: 0.031 ms against 0.048 there on an H200 (bench_conv.py, s4 results).
    """
    bk = 64 if k % 64 == 0 else 32
    blocks = (_fit(m, 128), _fit(n, 128), _fit(k, bk))
    if math.ceil(m / blocks[0]) * math.ceil(n / blocks[1]) < FEW_TILES:
        return (_fit(m, 64), blocks[1], blocks[2]), 4, 4    # the measured 64/128/64/4/4
    warps = 8 if blocks[0] * blocks[1] >= 128 * 128 else 4
    return blocks, warps, (3 if blocks[2] >= 64 else 4)


def choose_matmul_launch(numels, device_type: str, tuned=None,
                         kind: KernelKind = KernelKind.MATMUL) -> LaunchConfig:
    """A tuned template config when ``tuned`` is one (all four constexprs), else the heuristic
    (also for ``{"extern": 1}``, which ``matmul_select`` handles before codegen)."""
    heuristic = matmul_launch_config(numels, device_type, kind)
    if not tuned or not all(c in tuned for c in MATMUL_BLOCKS):
        return heuristic
    default = heuristic.kwargs()
    params = (*((c, int(tuned[c])) for c in MATMUL_BLOCKS),
              ("num_warps", int(tuned.get("num_warps", default["num_warps"]))),
              ("num_stages", int(tuned.get("num_stages", default["num_stages"]))))
    grid = matmul_grid(numels, int(tuned["BLOCK_M"]), int(tuned["BLOCK_N"]))
    return LaunchConfig(params, grid, tuned=True)
