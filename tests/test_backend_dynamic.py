"""``torch.compile(model, backend="kiln")`` where sizes change and where export cannot go.

- Dynamo's automatic dynamic shapes: the second size seen makes dynamo recompile the graph
  with that dim symbolic, handing the backend SymInt inputs next to the tensors. kiln
  compiles it once and serves every later size (batch 4, 4, 8, 16; a sequence length; an
  int argument dynamo made dynamic) with no further compile.
- Graph breaks: a model with a print and data-dependent control flow, which torch.export
  refuses, runs under torch.compile with kiln compiling each graph between the breaks.

Every call is checked against eager on fresh random inputs.
"""
from __future__ import annotations

import warnings

import pytest
import torch

import compiler.api
import compiler.backend  # noqa: F401  registers backend="kiln"
from compiler.capture import CaptureError, capture_module

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@pytest.fixture
def graphs(monkeypatch):
    """Every compiled graph's example input types, in compile order (a fresh dynamo)."""
    torch._dynamo.reset()
    seen = []
    real = compiler.api.compile_fx

    def recording(gm, example_inputs, options=None):
        seen.append([type(x).__name__ for x in example_inputs])
        return real(gm, example_inputs, options)
    monkeypatch.setattr(compiler.api, "compile_fx", recording)
    yield seen
    torch._dynamo.reset()


def _mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(),
                               torch.nn.LayerNorm(32), torch.nn.Linear(32, 8)).eval()


def test_batch_size_changes_compile_once_more_then_run_at_every_size(graphs):
    model = _mlp()
    compiled = torch.compile(model, backend="kiln")
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for batch in (4, 4, 8, 16, 5):
            x = torch.randn(batch, 16, generator=gen)
            torch.testing.assert_close(compiled(x), model(x))
    # static at 4; at 8 dynamo makes the batch symbolic (a SymInt input); nothing after
    assert len(graphs) == 2, graphs
    assert "SymInt" not in graphs[0] and "SymInt" in graphs[1]


def test_sequence_length_changes(graphs):
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True).eval()
    compiled = torch.compile(layer, backend="kiln")
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for seq in (5, 7, 12, 3):
            x = torch.randn(2, seq, 16, generator=gen)
            torch.testing.assert_close(compiled(x), layer(x), rtol=1e-4, atol=1e-4)
    assert len(graphs) == 2, graphs


class ScaleBy(torch.nn.Module):
    def forward(self, x, n: int):
        return torch.relu(x) * n + x.sum(0, keepdim=True)


def test_int_argument_made_dynamic_is_carried_to_the_code(graphs):
    """An int dynamo makes symbolic is no tensor's dim: the code gets it as the size of an
    empty tensor, so every value gives its own result, not the first one compiled."""
    model = ScaleBy()
    compiled = torch.compile(model, backend="kiln")
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for batch, n in ((4, 2), (4, 3), (4, 7), (6, 5), (9, 11)):
            x = torch.randn(batch, 6, generator=gen)
            torch.testing.assert_close(compiled(x, n), model(x, n))
    assert len(graphs) == 3, graphs    # static; n symbolic; n and the batch symbolic


def test_compile_fx_drops_int_inputs_and_keeps_the_compiled_module_interface():
    """A plain int input (a size dynamo specialised the graph on, and guards) is dropped
    from the call; the result still reports kernels and fallbacks."""
    gm = torch.fx.symbolic_trace(lambda x, n: torch.relu(x) * n)
    fn = compiler.api.compile_fx(gm, [torch.randn(4, 3), 2])
    assert fn.kernel_count == 1 and fn.fallback_ops == ()
    y = torch.randn(4, 3)
    torch.testing.assert_close(fn(y, 2)[0], torch.relu(y) * 2)
    torch.testing.assert_close(fn([y, 2])[0], torch.relu(y) * 2)   # aot_autograd's boxed call


class Gated(torch.nn.Module):
    """Export cannot capture this: a print, and a branch on a tensor's value."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = (torch.nn.Linear(8, 8), torch.nn.Linear(8, 8),
                                  torch.nn.Linear(8, 4))

    def forward(self, x):
        h = torch.nn.functional.gelu(self.a(x))
        print(f"gated: {tuple(h.shape)}")
        if x.sum() > 0:
            h = self.b(h) + h
        else:
            h = torch.tanh(self.b(h)) * 2
        return self.c(h).softmax(-1)


def test_graph_breaks_run_under_torch_compile_where_export_fails(graphs, capsys):
    torch.manual_seed(0)
    model = Gated().eval()
    with pytest.raises(CaptureError, match="torch.compile"):   # the error points the way
        capture_module(model, (torch.randn(4, 8) + 1,))
    capsys.readouterr()
    compiled = torch.compile(model, backend="kiln")
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for sign in (1, -1, 1, -1):
            x = torch.randn(4, 8, generator=gen).abs() * sign
            torch.testing.assert_close(compiled(x), model(x))
    assert capsys.readouterr().out.count("gated: (4, 8)") == 8   # eager's 4, compiled's 4
    # the code before the break, and each branch after it: all kiln's, none recompiled
    assert len(graphs) >= 3, graphs


def test_transformers_gpt2_under_torch_compile_at_two_lengths(graphs):
    """Real model code: transformers' GPT-2 (its graph holds a tensor constant, which kiln
    reads outside aot_autograd's fake mode) returns logits and its DynamicCache as eager."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=96, n_embd=32, n_layer=1, n_head=4,
                                     n_positions=64)
    model = transformers.GPT2LMHeadModel(config).eval()
    compiled = torch.compile(model, backend="kiln")
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for seq in (8, 12, 5):
            ids = torch.randint(3, 96, (2, seq), generator=gen)
            got, want = compiled(input_ids=ids), model(input_ids=ids)
            torch.testing.assert_close(got.logits, want.logits, rtol=1e-4, atol=1e-4)
            for a, b in zip(got.past_key_values.layers, want.past_key_values.layers):
                torch.testing.assert_close(a.keys, b.keys, rtol=1e-4, atol=1e-4)
                torch.testing.assert_close(a.values, b.values, rtol=1e-4, atol=1e-4)
    assert len(graphs) == 2, graphs      # static at 8, then symbolic in the length


# ----------------------------------------------------------------------------- symbolic sizes
# Sizes dynamo hands the backend as expressions of its symbols, each checked at several sizes.
def _check_at_sizes(fn, make_inputs, sizes, dynamic=None):
    compiled = torch.compile(fn, backend="kiln", dynamic=dynamic)
    gen = torch.Generator().manual_seed(6)
    with torch.no_grad():
        for n in sizes:
            inputs = make_inputs(n, gen)
            torch.testing.assert_close(compiled(*inputs), fn(*inputs))


def _evens_plus_odds(x):
    return x[::2] * 2 + x[1::2]


def _rows_viewed_back(x, flat):
    return flat.view(x.shape[0], -1) + x


@pytest.mark.parametrize("fn, make_inputs", [
    (_evens_plus_odds, lambda n, g: (torch.randn(2 * n, 3, generator=g),)),
    (_rows_viewed_back, lambda n, g: (torch.randn(n, 4, generator=g),
                                      torch.randn(4 * n, generator=g))),
], ids=["slices", "view"])
def test_two_spellings_of_one_size_broadcast(graphs, fn, make_inputs):
    """``(s0 + 1)//2`` rows against ``s0//2`` (and ``(s1)//s0`` columns against ``s2``):
    equal under the guard torch took, different as sympy. Before: ValueError: shapes ...
    do not broadcast (transformers' Mamba and Falcon with padding)."""
    _check_at_sizes(fn, make_inputs, (3, 5, 6), dynamic=True)
    assert len(graphs) == 1, graphs


def _half_the_rows(x):
    return x * torch.div(x.shape[0], 2, rounding_mode="floor") \
        + torch.div(x.shape[0], 3, rounding_mode="trunc").to(x.dtype)


def test_a_size_given_where_an_op_takes_a_tensor(graphs):
    """``torch.div(n, 2, rounding_mode=...)`` of a size is ``aten.div.Tensor_mode(s0, 2)``:
    no tensor among its arguments, which eager wraps as 0-d tensors. Before: IndexError
    from the lowering, which took its tensor from among the arguments."""
    _check_at_sizes(_half_the_rows, lambda n, g: (torch.randn(n, 3, generator=g),),
                    (4, 7, 9), dynamic=True)


def _times_rows(x):
    return x * x.shape[0]


def test_a_size_input_used_as_a_number_compiles_once(graphs):
    """Dynamo hands the size as a SymInt input; kiln took ``int()`` of it, which guards on
    its value, so dynamo compiled again at every later size (4 graphs here, not 2)."""
    _check_at_sizes(_times_rows, lambda n, g: (torch.randn(n, 3, generator=g),),
                    (4, 6, 9, 12))
    assert len(graphs) == 2, graphs      # static at 4, then symbolic


def _padded_to_fours(x):
    return torch.nn.functional.pad(x, (0, (4 - x.shape[-1] % 4) % 4)) * 2


def test_an_output_size_with_a_remainder(graphs):
    """The padded length is ``s0 + Mod(4 - Mod(s0, 4), 4)`` (transformers' Longformer pads
    to its attention window so): the wrapper computes it. Before: NameError: name 'Mod'."""
    _check_at_sizes(_padded_to_fours, lambda n, g: (torch.randn(2, n, generator=g),),
                    (5, 6, 9), dynamic=True)


def _shifted_row_zero(x):
    y = x.clone()
    y[:, 1:] = x[:, :-1] * 2
    return y[:, 0] + y[:, 1]


def test_a_row_of_a_scatter_over_a_dynamic_dim(graphs):
    """``y[:, 1:] = ...`` of a dynamic dim keeps its end as int64's max; reading row 0
    compares the literal index 0 (int32 in Triton) with it. Before: Scalar
    9223372036854775807 is out of range for type int32."""
    _check_at_sizes(_shifted_row_zero, lambda n, g: (torch.randn(4, n, generator=g),),
                    (3, 5, 8), dynamic=True)


def _overlapping_chunks(x):
    """transformers' Longformer ``_chunk``: windows overlapping by half, read with
    as_strided from a query that is a transpose of the (seq, batch, hidden) input."""
    s, b, _ = x.shape
    q = (x / 2).view(s, b, 4, 8).transpose(0, 1).transpose(1, 2).reshape(b * 4, s, 8)
    q = q.view(b * 4, s // 4, 4, 8)
    size, stride = list(q.size()), list(q.stride())
    size[1], stride[1] = size[1] * 2 - 1, stride[1] // 2
    return q.as_strided(size, stride) * 3


def test_as_strided_reads_eager_layout_of_a_dynamic_batch(graphs):
    """as_strided addresses eager's storage: the query is realized with eager's strides
    ``(8, 32*s0, 1)`` where dense, which was decided for numbers only; symbolic, it was
    stored row-major and the windows read the wrong elements (Longformer off by 4e-4 to
    4e-2 at a new batch size)."""
    _check_at_sizes(_overlapping_chunks, lambda b, g: (torch.randn(8, b, 32, generator=g),),
                    (2, 3, 5), dynamic=True)


@pytest.fixture
def sources(monkeypatch):
    """Every compiled graph's generated source, in compile order."""
    seen = []
    real = compiler.api.compile_fx

    def recording(gm, example_inputs, options=None):
        compiled = real(gm, example_inputs, options)
        seen.append(compiled.source)
        return compiled
    monkeypatch.setattr(compiler.api, "compile_fx", recording)
    return seen


def _shifted_twice(x):
    """transformers' Funnel ``_relative_shift_gather``: a reshape, a cut, a reshape back."""
    for _ in range(2):
        n, m = x.shape[-2:]
        x = x.reshape(-1, m, n)[:, 1:].reshape(-1, n, m - 1)
    return x * 2


def test_reshapes_of_reshapes_keep_their_index_bounded(graphs, sources):
    """Each symbolic reshape keeps a floor and a mod of the whole flat index per dim, so a
    chain of them multiplied the index: 40 KB of source for two shifts here, 770 KB and
    20 s of compile for three (Funnel timed out). A view past ``MAX_INDEX_OPS`` is stored."""
    _check_at_sizes(_shifted_twice, lambda n, g: (torch.randn(2, n, 2 * n, generator=g),),
                    (3, 5, 6), dynamic=True)
    assert len(sources) == 1 and len(sources[0]) < 20_000, [len(s) for s in sources]
