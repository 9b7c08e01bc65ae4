"""Edge cases of the op set against eager: PyTorch's OpInfo samples, 0-d, zero-size and bool
tensors, and ops whose output size depends on the data (issue 13).

``test_opinfo`` runs ``tests/opinfo_ops.py``: a curated list of ops, a few of OpInfo's own
CPU samples each (edge cases first), compiled with ``compile_fx`` and called on a fresh draw.
The tests after it pin each edge-case fix on a minimal graph, on fresh random inputs: a
failure message carries the seed (``KILN_TEST_SEED=<seed>`` replays it).
"""
from __future__ import annotations

import warnings

import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx
from torch.utils._pytree import tree_flatten

import compiler
from compiler.graph import KilnFallbackWarning

import opinfo_ops
from optable_inputs import generator

# eager's own warnings on degenerate samples (var of one element, NumPy's 0 / 0 in lanes)
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::RuntimeWarning",
                                        "ignore::FutureWarning")


# ----------------------------------------------------------------------------- OpInfo
@pytest.mark.parametrize("name", opinfo_ops.OPS)
def test_opinfo(name):
    pytest.importorskip("expecttest", reason="torch's OpInfo module needs the test extra")
    _, seed = generator()
    outcome = opinfo_ops.check_op(name, seed)
    where = f"{name} (KILN_TEST_SEED={seed})"
    assert outcome.ok, f"{where}:\n" + "\n".join(outcome.failures)
    assert outcome.samples > 0, f"{where}: no sample ran"
    expected = opinfo_ops.DATA_DEPENDENT.get(name)
    if expected is not None:
        # one warning per compiled graph, naming the op; everything else lowered
        assert outcome.fallback_ops == (expected,), f"{where}: {outcome.fallback_ops}"
        assert all(len(m) == 1 and expected in m[0] for m in outcome.warnings), \
            f"{where}: warnings {outcome.warnings}"


# ----------------------------------------------------------------------------- helpers
def _compile(fn, *inputs):
    """compile_fx of make_fx(fn) and the fallback warnings it gave."""
    gm = make_fx(fn)(*inputs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", KilnFallbackWarning)
        compiled = compiler.compile_fx(gm, list(inputs))
    warned = [str(w.message) for w in caught if issubclass(w.category, KilnFallbackWarning)]
    return compiled, warned


def _flat(fn):
    """``fn`` returning its (possibly nested: max's values and indices) outputs flat."""
    return lambda *args: tuple(tree_flatten(fn(*args))[0])


def _draw(gen, size, dtype=torch.float32):
    if dtype == torch.bool:
        return torch.rand(size, generator=gen) < 0.5
    if not dtype.is_floating_point:
        return torch.randint(-9, 10, size, generator=gen, dtype=dtype)
    return torch.randn(size, generator=gen, dtype=dtype)


def _check(fn, specs, fallbacks=(), kernels=None):
    """Compile ``fn`` on inputs drawn per ``specs`` ((size, dtype) pairs), call it on a fresh
    draw and compare with eager there; the fallback ops must be exactly ``fallbacks``."""
    gen, seed = generator()
    where = f"KILN_TEST_SEED={seed}"
    fn = _flat(fn)
    compiled, warned = _compile(fn, *[_draw(gen, s, d) for s, d in specs])
    assert compiled.fallback_ops == tuple(fallbacks), f"{where}: {compiled.fallback_ops}"
    assert len(warned) == len(fallbacks), f"{where}: {warned}"
    if kernels is not None:
        assert compiled.kernel_count == kernels, f"{where}: {compiled.kernel_count} kernels"
    fresh = [_draw(gen, s, d) for s, d in specs]
    try:
        opinfo_ops.compare(compiled(*[t.clone() for t in fresh]), fn(*fresh))
    except AssertionError as err:
        raise AssertionError(f"{where}: {err}") from None
    return compiled


F32, I64, BOOL = torch.float32, torch.int64, torch.bool


# ----------------------------------------------------------------------------- 0-d tensors
@pytest.mark.parametrize("dtype", [F32, I64, BOOL])
def test_reductions_over_dim_0_of_a_0d_tensor(dtype):
    """Eager takes dim 0 or -1 of a 0-d tensor as its one element (keepdim keeps it 0-d)."""
    def fn(x):
        out = (x.sum(0, keepdim=True), x.amax(-1, keepdim=True), x.amin(0), x.any(0, True),
               x.all(-1), *torch.max(x, 0, True))
        if dtype != BOOL:     # eager has no argmax of bools
            out += (x.argmax(0, keepdim=True), x.argmin(-1))
        if dtype == F32:
            out += (x.mean(0, keepdim=True), torch.logsumexp(x, 0, keepdim=True))
        return out
    _check(fn, [((), dtype)])


def test_arg_reductions_of_a_0d_float_under_the_interpreter():
    """argmax's NaN check compared a scalar load, which the interpreter could not ``&``."""
    _check(lambda x: (x.argmax(), x.argmin(), torch.max(x, 0)[1]), [((), F32)])


# ----------------------------------------------------------------------------- zero-size
@pytest.mark.parametrize("size", [(0,), (0, 3), (5, 0, 3)])
def test_zero_size_values_need_no_kernel(size):
    """Creation ops, pointwise ops, roll and softmax over no elements allocate and launch
    nothing (a kernel over a zero-size dim divided by it to index)."""
    def fn(x):
        return (torch.full_like(x, 2.5), torch.zeros_like(x), torch.ones_like(x, dtype=I64),
                torch.roll(x, 1, 0), x.exp() * 2, torch.softmax(x, -1), x.reshape(-1, 1) + 1)
    _check(fn, [(size, F32)], kernels=0)


def test_zero_size_inputs_among_others():
    """Empty pieces of a cat, reductions of no rows, reductions of empty rows (sum 0, mean
    NaN, any False), a matmul over an empty inner dim (zeros)."""
    def fn(a, b, c, p, q):
        return (torch.cat([a, b]) * 2, torch.cat([a, a]), c.sum(1), c.amax(-1), p.sum(1),
                p.mean(-1, keepdim=True), p.any(1), torch.mm(p, q), (p @ q).relu() + 1)
    _check(fn, [((0,), F32), ((4,), F32), ((0, 6), F32), ((3, 0), F32), ((0, 4), F32)])


def test_integer_ops_over_nothing_are_not_evaluated():
    """Ops whose results have no elements are not lowered: integer division of two empty
    tensors once folded 0 // 0 at compile time."""
    def divisions(a, b):
        return a // b, torch.remainder(a, b), torch.fmod(a, b), a.div(b, rounding_mode="trunc")
    _check(divisions, [((0, 1, 3), I64), ((0, 4, 3), I64)], kernels=0)


# ----------------------------------------------------------------------------- bool
def test_bool_logic_with_a_0d_operand_under_the_interpreter():
    """A comparison of scalars broadcast to a block turns into floats under Triton's
    interpreter, which its ``&``, ``|`` and ``^`` refuse: kiln emits selects instead."""
    def fn(a, s, i, k):
        m, n, d = a > 0, s > 0, k.abs() + 1    # d: a divisor that is never 0
        return (torch.logical_xor(a, s), torch.logical_xor(s, a), m & n, m | n, m ^ n,
                torch.fmax(a, s), torch.fmin(s, a), torch.remainder(i, d), i // -d,
                (i > 0).logical_xor(k > 0))
    _check(fn, [((7,), F32), ((), F32), ((7,), I64), ((), I64)])


def test_bool_arithmetic_follows_eager():
    """bool + bool is logical or, bool * bool logical and, square(bool) is int64, and the
    bools' max and min have no iinfo."""
    def fn(a, b):
        return (a + b, a * b, torch.square(a), a.amax(0), b.amin(-1), torch.max(a, 1))
    _check(fn, [((4, 5), BOOL), ((4, 5), BOOL)])


def test_arange_of_an_int_dtype_casts_its_bounds_first():
    """Eager: arange(0.5, 9.0, 2.5, dtype=int64) is [0, 2, 4, 6, 8] (bounds and step cast to
    int64 before stepping), not the doubles' 0.5 + 2.5 i truncated."""
    def fn(x):
        return (x + torch.arange(0.5, 9.0, 2.5, dtype=I64), torch.arange(-2.9, -1.0, dtype=I64),
                torch.arange(-7.9, -4.0, dtype=I64), torch.arange(4.2, -3.0, -1.5, dtype=I64))
    _check(fn, [((5,), I64)])


def test_arange_from_a_dynamic_size():
    """``arange(s, 2 * s)`` with ``s`` a dynamic dim: the start is a size expression (it
    raised IndexError in lowering); a float one from a size falls back, still like eager."""
    from torch.export import Dim

    class Positions(torch.nn.Module):
        def forward(self, x):
            n = x.shape[0]
            return (x + torch.arange(n, 2 * n)[:, None], torch.arange(n, 3 * n, 2),
                    torch.arange(n, 2 * n, dtype=torch.float32) / 3)
    module = Positions()
    compiled = compiler.compile_module(module, (torch.randn(5, 3),),
                                       dynamic_shapes=({0: Dim("n", min=2, max=64)},))
    for n in (2, 7, 12):
        x = torch.randn(n, 3)
        for got, want in zip(compiled(x), module(x)):
            torch.testing.assert_close(got, want)


def test_integer_linspace_and_float64_scalars_follow_eager():
    """Integer linspace casts its bounds first and steps in float64 (torch's reference did
    neither); a Python float in a float64 op is rounded once, not through float32 first."""
    def fn(x):
        return (torch.linspace(4.3, -3, 50, dtype=I64), torch.linspace(-4.9, 3.9, 5, dtype=I64),
                x + torch.linspace(0.5, 9.7, 5, dtype=I64), x.double() * 0.1 + 0.3)
    _check(fn, [((5,), I64)])


def test_int64_ops_of_scalars_only_stay_int64():
    """``where(c, 0, 1)`` of a 0-d int64 is an op of scalars only, which Triton computed in
    int32: the int64 min's identity (iinfo.max) then did not fit."""
    def fn(t):
        ones = torch.ones_like(t)
        return torch.where(t == -1, torch.zeros_like(t), ones).amin(0), (t * 0 + 7).amax()
    _check(fn, [((), I64)])


def test_a_gather_along_a_dim_of_one():
    """The gathered index into a dim of size 1 simplifies away: a scalar address, loaded
    without the index's block mask (quantile of a 0-d input)."""
    _check(lambda s: (torch.nanquantile(s, 0.5),), [((), F32)], fallbacks=("aten.sort.default",))
def test_a_tensor_filled_from_a_dynamic_size():
    """``torch.tensor(min(s, 6))`` with ``s`` a dynamic dim is ``scalar_tensor(sym_min)``:
    its fill is a size expression known only at run time (it raised 'Could not infer dtype
    of Min' in lowering; DeBERTa's relative-position span)."""
    from torch.export import Dim

    class Span(torch.nn.Module):
        def forward(self, x):
            span = torch.tensor(min(x.shape[0], 6))
            return (x * span, torch.full((2,), x.shape[0] * 2, dtype=torch.float32),
                    torch.tensor(x.shape[0], dtype=torch.float) / 4)
    module = Span()
    compiled = compiler.compile_module(module, (torch.randn(5, 3),),
                                       dynamic_shapes=({0: Dim("n", min=2, max=64)},))
    for n in (3, 9):
        x = torch.randn(n, 3)
        for got, want in zip(compiled(x), module(x)):
            torch.testing.assert_close(got, want)


def test_a_negative_slice_start_before_a_dynamic_dim_clamps_to_zero():
    """``x[-16:]`` of a dynamic dim shorter than 16 starts at 0 (XLNet's kept memory): the
    start was ``n - 16``, read before the buffer (a returned view raised 'invalid storage
    offset'). ``x[:, -1]`` still indexes ``n - 1``."""
    from torch.export import Dim

    class Tail(torch.nn.Module):
        def forward(self, x):
            kept = x[-16:]
            return kept, kept * 2 + 1, x[:, -1], x.transpose(0, 1)[:, -3:]
    module = Tail()
    compiled = compiler.compile_module(module, (torch.randn(5, 4),),
                                       dynamic_shapes=({0: Dim("n", min=3, max=15)},))
    for n in (3, 9, 15):
        x = torch.randn(n, 4)
        for got, want in zip(compiled(x), module(x)):
            torch.testing.assert_close(got, want)


def test_a_table_cut_to_a_dynamic_length_broadcasts_like_eager():
    """MPT's ALiBi: a 16-position table cut with ``max(0, 16 - n)`` starts is ``1 - Max(0,
    1 - n)`` by ``16 - Max(0, 16 - n)``; export's guards make those 1 and ``n``, which
    broadcasting needs (it raised 'shapes do not broadcast' in lowering)."""
    from torch.export import Dim

    class TableBias(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("table", torch.randn(4, 1, 16))

        def forward(self, scores):
            q, k = scores.shape[-2:]
            bias = self.table[:, max(0, self.table.size(1) - q):,
                              max(0, self.table.size(2) - k):]
            return (scores + bias).softmax(-1)
    module = TableBias()
    n = Dim("n", min=2, max=15)     # export's guard: a length of 16 would be a static cut
    compiled = compiler.compile_module(module, (torch.randn(2, 4, 6, 6),),
                                       dynamic_shapes=({2: n, 3: n},))
    for size in (2, 11, 15):
        scores = torch.randn(2, 4, size, size)
        torch.testing.assert_close(compiled(scores), module(scores))


def test_hardtanh_of_integers_truncates_its_bounds():
    _check(lambda x: (torch.nn.functional.hardtanh(x, -2.5, 3.5),
                      torch.ops.aten.hardtanh(x)), [((9,), I64)])


# ----------------------------------------------------------------------------- index ops
def test_index_ops_with_one_index_and_0d_tensors():
    """One index for every lane made the scatter's address a scalar, which ``tl.store``
    cannot pair with a block of values; 0-d selves have the one element to pick."""
    idx = torch.tensor([2])

    def fn(x, v, s, t):
        return (x.index_add(0, idx, v), x.index_copy(0, idx, v), x.index_fill(0, idx, -1.5),
                s.index_select(0, torch.tensor([0])), s.scatter(0, torch.tensor(0), t),
                s.scatter_add(0, torch.tensor(0), t), x.index_put((idx,), v))
    _check(fn, [((5, 3), F32), ((1, 3), F32), ((), F32), ((), F32)])


def test_a_scalar_load_under_a_block_mask():
    """A 0-d piece of a cat (column_stack) is read at one address under the piece's block
    mask, which ``tl.load`` refuses unless the address is a block too (on GPUs as well)."""
    _check(lambda s, b: (torch.column_stack((s, b)), torch.cat([s.reshape(1, 1), b], 1) * 2),
           [((), F32), ((1, 5), F32)])


def test_gather_and_unique_of_edge_shapes():
    """gather from a 0-d tensor; unique over a dim, whose result has the data-dependent
    stride Max(1, u0) (printed as Python's max in the wrapper)."""
    def gathers(s, i):
        i = i.abs() % 1    # 0: the one valid index
        return s.gather(0, i), s.gather(0, i[0])
    _check(gathers, [((), F32), ((1,), I64)])
    compiled = _check(lambda x: (torch.unique(x.round(), dim=1),), [((5, 4), F32)],
                      fallbacks=("aten.unique_dim.default",))
    assert compiled.kernel_count >= 1


def test_unique_consecutive_over_a_negative_dim():
    """torch's fake kernel took dim=-1 as is (a 4-d result for a (3, 6) input): kiln makes
    the dim non-negative before tracing, so the buffers it plans are eager's."""
    _check(lambda x: torch.unique_consecutive((x > 0).float(), return_counts=True, dim=-1),
           [((3, 6), F32)], fallbacks=("aten.unique_consecutive.default",))
def test_gather_from_a_broadcast_tensor_reads_one_address():
    """A gather along a stride-0 (expanded 0-d) dim: its index drops out of the address, so
    the load is of one scalar, which must not take the block mask (ViTMAE's
    ``mask.gather(1, ids_restore)`` with a mask filled from a 0-d constant)."""
    def fn(s, i):
        i = i.abs() % 16
        return torch.gather(s.expand(2, 16), 1, i) + i, torch.gather(s.expand(2, 16), 1, i)
    _check(fn, [((), F32), ((2, 16), I64)])


def test_index_put_with_a_bool_mask_falls_back_once():
    """A bool mask selects a data-dependent number of places: ATen does it, one warning."""
    _check(lambda x, m, v: (x.index_put((m,), v), x * 2),
           [((4, 3), F32), ((4, 3), BOOL), ((), F32)], fallbacks=("aten.index_put.default",))


# ----------------------------------------------------------------------------- data-dependent
@pytest.mark.parametrize("op,aten", [
    (lambda x: torch.masked_select(x, x > 0), "aten.masked_select.default"),
    (torch.nonzero, "aten.nonzero.default"),
    (lambda x: torch.unique(x), "aten._unique2.default"),
])
def test_data_dependent_ops_fall_back_once_and_their_users_lower(op, aten):
    """The result's size is bound in the wrapper from the result itself (it was a NameError,
    ``u0``), so the kernels that read it still lower; the module counts as dynamic (on a GPU:
    no launches specialized on sizes, no CUDA graphs)."""
    compiled = _check(lambda x: (op(x) * 2 + 1, x.sum()), [((4, 6), F32)], fallbacks=(aten,))
    assert compiled.kernel_count >= 2
    assert compiled.size_ranges, "a data-dependent size is not in the module's size ranges"


class _ItemSizes(torch.nn.Module):
    """Sizes from tensor values (``.item()``): a count read as a slice end, and DeBERTa's
    relative-position span, ``table[16 - span:16 + span]`` with ``span`` a tensor."""
    def forward(self, x, table):
        n = (x > 0).sum().item()
        torch._check_is_size(n)
        torch._check(n <= table.shape[0])
        span = torch.tensor(min(x.shape[1], 16))
        return table[:n] * 2, table[16 - span:16 + span] + 1, x * span


def test_item_values_bind_the_sizes_after_them():
    """``.item()`` is read in the wrapper once its tensor is computed and bound to its symbol
    (it was never set: 'name u0 is not defined' at the first call); a slice whose size
    export could only name (u2, from two item values) is made by ATen and its size read
    from the result. The module counts as dynamic (no CUDA graph replays a stale count)."""
    from torch.export import Dim
    gen, seed = generator()
    module, table = _ItemSizes(), torch.randn(32, 4, generator=gen)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KilnFallbackWarning)
        compiled = compiler.compile_module(module, (torch.randn(2, 5, generator=gen), table),
                                           dynamic_shapes=({1: Dim("s", min=2, max=64)}, None))
    static = compiler.compile_module(module, (torch.randn(2, 5, generator=gen), table))
    assert static.compiled.size_ranges, "an .item() size is not in the module's size ranges"
    for s in (3, 20):
        x = torch.randn(2, s, generator=gen)
        for k, (got, want) in enumerate(zip(compiled(x, table), module(x, table))):
            torch.testing.assert_close(got, want, msg=lambda m, k=k: f"seed {seed} out {k}: {m}")


def test_nonzero_in_a_module_through_export():
    """torch.export asserts on the unbacked size (``u0 >= 0``): a size comparison, not an
    op to fall back for (it was 'cannot lower or fall back for <built-in function ge>')."""
    class Model(torch.nn.Module):
        def forward(self, x):
            return torch.nonzero(x > 0) * 2, torch.masked_select(x, x > 0.5) + x.mean()

    gen, seed = generator()
    model = Model()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", KilnFallbackWarning)
        compiled = compiler.compile_module(model, (torch.randn(4, 5, generator=gen),))
    warned = [str(w.message) for w in caught if issubclass(w.category, KilnFallbackWarning)]
    assert len(warned) == 2, warned
    fresh = torch.randn(4, 5, generator=gen)
    opinfo_ops.compare(compiled(fresh), model(fresh))


# ----------------------------------------------------------------------------- GPU code
def test_edge_case_kernels_build_for_sm90():
    """The kernels these fixes changed (selects for bool logic, the lanes of a scatter of
    one index, a scalar load under a block mask, argmax's NaN check) compile to sm_90
    cubins: no GPU needed, so CPU CI checks what only the interpreter runs here."""
    from compiler.api import lower
    from compiler.autotune import Target, build
    from compiler.capture import capture_module

    class Edges(torch.nn.Module):
        def forward(self, s, b, i):
            return (torch.column_stack((s, b)), torch.logical_xor(b > 0, s > 0), b.argmax(),
                    b.index_add(1, i, b[:, :1]), (b > 0) ^ (s > 0), torch.fmax(b, s))

    args = (torch.randn(()), torch.randn(1, 5), torch.tensor([2]))
    artifact = lower(capture_module(Edges(), args), {}, "cuda")
    assert len(artifact.kernels) >= 4
    for kernel in artifact.kernels:
        config = kernel.spec.launch.config()
        result = build(kernel, config, Target("cuda", 90, 32))
        assert result.status == "ok" and result.cubin[:4] == b"\x7fELF", (kernel.name, result.error)
