"""Starting the CUDA libraries a served module's ATen ops use, while it loads."""
from __future__ import annotations

import pytest
import torch

from compiler.kernels.libraries import libraries_for, start_libraries


def test_each_op_family_maps_to_its_library_and_others_to_none():
    assert libraries_for(["aten.convolution.default"]) == {"cudnn"}
    assert libraries_for(["aten.bmm.default", "aten.addmm.default"]) == {"cublas"}
    assert libraries_for(["aten._scaled_dot_product_flash_attention.default"]) == {"attention"}
    assert libraries_for(["aten.relu.default", "aten.cat.default", "prims.iota"]) == set()


def test_nothing_starts_off_cuda_or_without_library_ops():
    assert start_libraries(["aten.convolution.default"], torch.device("cpu"),
                           torch.float32) is None
    assert start_libraries(["aten.relu.default"], torch.device("cuda"), torch.float32) is None


@pytest.mark.gpu
def test_the_thread_starts_every_library_and_ends():
    ops = ["aten.convolution.default", "aten.addmm.default",
           "aten.scaled_dot_product_attention.default"]
    thread = start_libraries(ops, torch.device("cuda"), torch.bfloat16)
    thread.join(timeout=120)
    assert not thread.is_alive()
    graph = torch.cuda.CUDAGraph()        # nothing of the thread's is left to break a capture
    x = torch.ones(4, 4, device="cuda")
    with torch.cuda.graph(graph):
        y = x @ x
    graph.replay()
    assert torch.equal(y, torch.full((4, 4), 4.0, device="cuda"))
