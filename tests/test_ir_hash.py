"""compiler.ir: an expression node's hash is computed once, so a body whose subtrees are
shared (a fused kernel's: every use of a value refers to the same node) hashes in time
linear in its distinct nodes; the cached hash never leaves the process."""
from __future__ import annotations

import pickle

import sympy
import torch

from compiler.ir import (Const, Load, Op, OpName, index_symbol, index_symbols, substitute,
                         walk)


class _CountedHash:
    """A constant's value that counts how often it is hashed."""

    def __init__(self) -> None:
        self.calls = 0

    def __hash__(self) -> int:
        self.calls += 1
        return 7

    def __eq__(self, other) -> bool:
        return self is other


def test_a_shared_subtree_is_hashed_once():
    counted = _CountedHash()     # hashed with the bottom op, as its literal
    node = Op("mul", (Const(2.0, torch.float32),
                      Load("arg0", index_symbol("i", 0), torch.float32)), torch.float32,
              params=(counted,))
    for _ in range(16):          # each level uses the one below twice: 2**16 paths
        node = Op("add", (node, node), torch.float32)
    nodes = walk(node)
    assert len(nodes) == 16 + 3
    assert hash(node) == hash(node)
    assert counted.calls == 1    # once per path, it would be 2**16


def test_a_pickled_node_drops_its_cached_hash_and_stays_equal():
    i0 = index_symbol("i", 0)
    node = Op("relu", (Load("arg0", 2 * i0, torch.float32),), torch.float32)
    hash(node)
    copy = pickle.loads(pickle.dumps(node))
    assert "_hash" not in vars(copy) and "_hash" not in vars(copy.args[0])
    assert copy == node and hash(copy) == hash(node) and {node, copy} == {node}


def test_substitute_replaces_each_index_and_keeps_untouched_nodes():
    """Two loads of one index get one replacement (zero included); a node nothing replaces
    in is the very node, so its cached hash and memo entries carry over."""
    i = index_symbols(2)
    a, b = Load("a", 4 * i[0] + i[1], torch.float32), Load("b", 4 * i[0] + i[1], torch.float32)
    body = Op(OpName.ADD, (a, b), torch.float32)
    moved = substitute(body, {i[0]: sympy.Integer(0), i[1]: sympy.Integer(0)})
    assert [n.index for n in moved.args] == [0, 0]
    kept = substitute(body, {index_symbols(3)[2]: sympy.Integer(5)})
    assert kept is body
