"""Bad input gets a clear error: unsupported dtypes, calls unlike the compiled signature,
models torch.export cannot capture. Each test checks the exception type and that the message
names what is wrong (the dtype, the input index and what differs, the model)."""
from __future__ import annotations

import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

import compiler
from compiler.capture import CaptureError
from compiler.graph import LoweringError
from compiler.runtime import InputMismatchError
from pipeline.zoo import tiny

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


# ----------------------------------------------------------------------------- dtypes
UNSUPPORTED = [torch.complex64, torch.complex128, torch.float8_e4m3fn]


def _unsupported_input(dtype: torch.dtype) -> torch.Tensor:
    x = torch.randn(4, 5)
    return torch.complex(x, x.flip(0)).to(dtype) if dtype.is_complex else x.to(dtype)


@pytest.mark.parametrize("dtype", UNSUPPORTED, ids=str)
def test_compile_fx_refuses_unsupported_input_dtype(dtype):
    x = _unsupported_input(dtype)
    gm = make_fx(lambda a: (a.clone(),))(x)
    with pytest.raises(LoweringError) as info:
        compiler.compile_fx(gm, [x])
    assert str(dtype) in str(info.value), info.value


def test_complex_intermediates_run_as_aten_fallbacks():
    """Float inputs, but a complex value inside the graph (an FFT's): each node reading or
    returning it runs as its ATen op, with a warning naming the dtype, and the float ops
    after it still lower (it was a LoweringError)."""
    from compiler.graph import KilnFallbackWarning

    def fn(a, b):
        return (torch.view_as_real(torch.complex(a, b) * 2).sum(-1),)
    a, b = torch.randn(4, 5), torch.randn(4, 5)
    gm = make_fx(fn)(a, b)
    with pytest.warns(KilnFallbackWarning, match="complex64"):
        compiled = compiler.compile_fx(gm, [a, b])
    assert "aten.complex.default" in compiled.fallback_ops
    assert compiled.kernel_count >= 1
    torch.testing.assert_close(compiled(a, b)[0], fn(a, b)[0])


def test_an_op_without_a_fake_kernel_is_named():
    """lstsq's output sizes are known only by running it (no fake kernel): kiln cannot trace
    the graph, and says so naming the op (it was torch's bare DynamicOutputShapeException)."""
    a, b = torch.randn(3, 3), torch.randn(3, 2)
    gm = make_fx(lambda a, b: (torch.linalg.lstsq(a, b, driver="gels")[0],))(a, b)
    with pytest.raises(LoweringError, match="linalg_lstsq.*no fake kernel"):
        compiler.compile_fx(gm, [a, b])


class _Scale(torch.nn.Module):
    def forward(self, x):
        return x * 2


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128], ids=str)
def test_compile_module_refuses_unsupported_dtype(dtype):
    x = _unsupported_input(dtype)
    with pytest.raises(CaptureError) as info:
        compiler.compile_module(_Scale(), (x,))
    message = str(info.value)
    assert str(dtype) in message and "_Scale" in message, message


# ----------------------------------------------------------------------------- call-time mismatch
@pytest.fixture(scope="module")
def add_fn():
    """``a + b`` compiled for two contiguous float32 (4, 5) CPU tensors."""
    a, b = torch.randn(4, 5), torch.randn(4, 5)
    return compiler.compile_fx(make_fx(lambda a, b: (a + b,))(a, b), [a, b])


def test_matching_inputs_run(add_fn):
    # the control for the mismatch tests below: the right inputs pass the checks
    a, b = torch.randn(4, 5), torch.randn(4, 5)
    torch.testing.assert_close(add_fn(a, b)[0], a + b)


# (bad input 1, what the message must say): each entry is a group of alternatives, one of
# which must appear: what differs, the value compiled for, the value passed.
MISMATCHES = {
    "shape": (torch.randn(4, 6), [("shape", "dim 1"), ("(4, 5)", "compiled for 5"), ("(4, 6)",)]),
    "rank": (torch.randn(5), [("shape", "rank", "dims"), ("(4, 5)",), ("(5,)",)]),
    "dtype": (torch.randn(4, 5, dtype=torch.float64), [("dtype",), ("float32",), ("float64",)]),
    "int-dtype": (torch.randint(0, 9, (4, 5), dtype=torch.int32),
                  [("dtype",), ("float32",), ("int32",)]),
    "device": (torch.empty(4, 5, device="meta"), [("device",), ("cpu",), ("meta",)]),
    "transposed": (torch.randn(5, 4).t(), [("stride",), ("(5, 1)",), ("(1, 4)",)]),
    "step-sliced": (torch.randn(4, 10)[:, ::2], [("stride",), ("(5, 1)",), ("(10, 2)",)]),
}


@pytest.mark.parametrize("kind", list(MISMATCHES))
def test_call_with_mismatched_input(add_fn, kind):
    bad, groups = MISMATCHES[kind]
    with pytest.raises(InputMismatchError) as info:
        add_fn(torch.randn(4, 5), bad)
    message = str(info.value)
    assert "input 1" in message, message           # which input, by index
    for group in groups:
        assert any(word in message for word in group), f"none of {group} in {message!r}"


@pytest.mark.parametrize("args", [(torch.randn(4, 5),),
                                  (torch.randn(4, 5), torch.randn(4, 5), torch.randn(4, 5))],
                         ids=["too-few", "too-many"])
def test_call_with_wrong_number_of_inputs(add_fn, args):
    with pytest.raises(InputMismatchError) as info:
        add_fn(*args)
    message = str(info.value)
    assert "2 inputs" in message and f"called with {len(args)}" in message, message


def test_call_with_non_tensor_input(add_fn):
    with pytest.raises(InputMismatchError) as info:
        add_fn(torch.randn(4, 5), 3.0)
    assert "input 1" in str(info.value) and "float" in str(info.value), info.value


def test_compile_module_call_with_mismatched_input():
    """A compiled module called with an input unlike its example names that input."""
    module, (x,) = tiny.mlp()
    compiled = compiler.compile_module(module, (x,))
    wrong = torch.randn(x.shape[0] + 1, x.shape[1])
    with pytest.raises((InputMismatchError, CaptureError)) as info:
        compiled(wrong)
    message = str(info.value)
    assert str(list(wrong.shape)) in message or str(tuple(wrong.shape)) in message, message
    with pytest.raises((InputMismatchError, CaptureError)) as info:
        compiled(x.double())
    assert "float64" in str(info.value), info.value
    with pytest.raises((InputMismatchError, CaptureError)) as info:
        compiled(x.to("meta"))
    assert "meta" in str(info.value), info.value


# A non-contiguous user input is copied into the compiled layout (tests/test_guards.py).


# ----------------------------------------------------------------------------- capture
def test_not_exportable_module_names_the_model():
    module, args = tiny.not_exportable()
    with pytest.raises(CaptureError) as info:
        compiler.compile_module(module, args)
    message = str(info.value)
    assert "DataDependentBranch" in message and "export" in message, message
    assert info.value.__cause__ is not None        # the export error is chained, not lost


def test_non_module_is_refused():
    with pytest.raises(CaptureError) as info:
        compiler.compile_module(lambda x: x * 2, (torch.randn(3),))
    assert "nn.Module" in str(info.value), info.value
