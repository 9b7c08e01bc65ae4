"""compile_module's result as a user meets it: no silent gradients, no silent mode switch,
inputs in other layouts accepted, and errors that speak the user's terms (issue 14)."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch.export import Dim

import compiler
from compiler.capture import CaptureError
from compiler.guards import InferenceOnlyWarning, ModeChangedError
from compiler.runtime import InputMismatchError


def mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(),
                               torch.nn.Linear(16, 4)).eval()


@pytest.fixture(scope="module")
def compiled_mlp():
    module = mlp()
    return module, compiler.compile_module(module, (torch.randn(4, 8),))


@pytest.fixture(scope="module")
def compiled_conv():
    torch.manual_seed(0)
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval()
    return conv, compiler.compile_module(conv, (torch.randn(2, 3, 8, 8),))


def test_outputs_are_detached_with_one_warning_and_backward_raises(compiled_conv):
    """Before: c(x).sum().backward() ran, leaving some gradients None and others wrong."""
    conv, c = compiled_conv
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    with pytest.warns(InferenceOnlyWarning, match="inference-only"):
        out = c(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")      # once per compiled model
        c(x)
    assert out.grad_fn is None and not out.requires_grad
    torch.testing.assert_close(out, conv(x).detach(), rtol=1e-4, atol=1e-4)
    with pytest.raises(RuntimeError, match="does not require grad"):
        out.sum().backward()
    assert x.grad is None and all(p.grad is None for p in conv.parameters())


def test_no_warning_under_no_grad(compiled_mlp):
    module, c = compiled_mlp
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.no_grad():
            c(torch.randn(4, 8))
        with torch.inference_mode():
            c(torch.randn(4, 8))


def test_switching_train_eval_after_compiling_raises(compiled_mlp):
    module, c = compiled_mlp
    x = torch.randn(4, 8)
    module.train()
    try:
        with pytest.raises(ModeChangedError, match="compiled in eval mode but is now in train"):
            c(x)
    finally:
        module.eval()
    with torch.no_grad():
        torch.testing.assert_close(c(x), module(x), rtol=1e-4, atol=1e-4)


def test_a_train_mode_module_compiles_its_train_forward_with_a_warning():
    module = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.BatchNorm1d(8))
    with pytest.warns(UserWarning, match="is in train mode"):
        c = compiler.compile_module(module, (torch.randn(4, 8),))
    assert c.captured.mutated_buffers           # running statistics are updated: train mode
    module.eval()
    with pytest.raises(ModeChangedError, match="compiled in train mode"):
        c(torch.randn(4, 8))


def test_noncontiguous_and_channels_last_inputs_are_copied_into_the_compiled_layout(
        compiled_mlp, compiled_conv):
    """Before: 'strides differ' where eager accepts the tensor."""
    module, c = compiled_mlp
    conv, cc = compiled_conv
    x = torch.randn(8, 4).t()                    # (4, 8), not contiguous
    nhwc = torch.randn(2, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(c(x), module(x), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(cc(nhwc), conv(nhwc), rtol=1e-4, atol=1e-4)
        with pytest.raises(InputMismatchError, match="argument 0: dim 1 is 9"):
            c(torch.randn(4, 9))                 # a real mismatch still fails


def test_extra_and_keyword_arguments_get_a_sentence(compiled_mlp):
    module, c = compiled_mlp
    x = torch.randn(4, 8)
    with pytest.raises(CaptureError) as extra:
        c(x, x)
    assert ("called with 2 positional arguments (tensor, tensor) and no keyword arguments, "
            "but it was captured with 1 positional argument (tensor)") in str(extra.value)
    with pytest.raises(CaptureError, match="keyword arguments mask, but") as keyword:
        c(x, mask=x)
    assert "TreeSpec" not in str(extra.value) + str(keyword.value)


def test_dynamic_dims_are_named_as_the_user_named_them():
    module = mlp()
    batch = Dim("batch", min=1, max=16)
    c = compiler.compile_module(module, (torch.randn(4, 8),), dynamic_shapes=({0: batch},))
    with torch.no_grad():
        assert c(torch.randn(9, 8)).shape == (9, 4)
        with pytest.raises(InputMismatchError, match=r"dim 0 \(batch\) is 32, outside its "
                                                     r"allowed range \[1, 16\]"):
            c(torch.randn(32, 8))


class Halves(torch.nn.Module):
    def forward(self, pairs, x):
        return pairs.view(2, -1, 4)[0] + x * 2


def test_a_derived_dim_ahead_of_its_root_dim_is_checked():
    """The first input is ``2*n`` long, only the second has ``n`` itself (export's derived
    dims; dynamo's graphs after a break, as in transformers' Switch): the check read
    ``2*s0`` before binding ``s0`` and raised NameError at every call."""
    module, n = Halves().eval(), Dim("n", min=2, max=32)
    c = compiler.compile_module(module, (torch.randn(10, 4), torch.randn(5, 4)),
                                dynamic_shapes=({0: 2 * n}, {0: n}))
    for k in (3, 8):
        pairs, x = torch.randn(2 * k, 4), torch.randn(k, 4)
        torch.testing.assert_close(c(pairs, x), module(pairs, x))
    with pytest.raises(InputMismatchError, match=r"argument 0: dim 0 \(2\*n\) is 7, "
                                                 r"expected 6"):
        c(torch.randn(7, 4), torch.randn(3, 4))
    with pytest.raises(InputMismatchError, match=r"dim 0 \(n\) is 40, outside its allowed "
                                                 r"range \[2, 32\]"):
        c(torch.randn(80, 4), torch.randn(40, 4))


def test_a_dynamic_dim_past_the_rank_is_refused_up_front():
    """Before: IndexError: list assignment index out of range, from inside torch.export."""
    with pytest.raises(ValueError, match=r"argument 0 has 2 dims \(shape \[4, 8\]\); dim 2 "
                                         r"does not exist"):
        compiler.compile_module(mlp(), (torch.randn(4, 8),),
                                dynamic_shapes={"input": {2: Dim("b")}})
