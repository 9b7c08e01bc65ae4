"""CUDA graphs for dynamic-shape modules: one captured graph per size, from a bounded pool.

A dynamic module's kernels take their sizes as arguments, so one CUDA graph serves one set
of size-symbol values. ``DynamicGraphedCall`` keys graphs by those values (read from the
inputs: ``sizes_from_data``), keeps at most ``GraphPolicy.max_graphs`` of them (least
recently used goes first, and only for a size seen more often than it: sizes recurring in
a cycle longer than the pool, a decode loop repeated over one range of lengths, would
otherwise evict each other and pay a capture at every step) and captures them all into
one shared memory pool, as Inductor's
cudagraph trees do: a graph's scratch memory is reused by the next capture instead of each
size holding its own. That is safe because no graph reads pool memory on entry (inputs are
copied into buffers outside the pool, weights are the caller's) and every output is cloned
out before the next replay.

A size is run directly the first time it is seen (that loads its kernels; a capture needs
one run before it), captured the second time and replayed from then on. A capture that
fails (an op that syncs, a library that allocates while capturing) warns once, and that
size runs directly from then on. With ``GraphPolicy.buckets``, a size symbol that
``graph_padding`` proves row-wise independent is padded up to its bucket, so sizes 3, 5
and 7 share the graph of 8.

Example (CPU, with the fake backend the tests use: no CUDA needed to follow the protocol):
    >>> GraphPolicy(max_graphs=4, buckets=(8, 16)).bucket(5), GraphPolicy(4, (8,)).bucket(9)
    (8, 9)
"""
from __future__ import annotations

import functools
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

import torch

if TYPE_CHECKING:
    from .graph_padding import PaddingPlan


class GraphCaptureWarning(UserWarning):
    """A size's CUDA graph could not be captured; that size runs its kernels directly."""


@dataclass(frozen=True)
class GraphPolicy:
    """How many graphs a dynamic module keeps, and the sizes it pads up to (ascending)."""
    max_graphs: int = 64
    buckets: tuple[int, ...] = ()
    max_bytes: int = 1 << 30        # what the graphs hold of their own: inputs, outputs

    def __post_init__(self):
        if self.max_graphs < 0 or self.max_bytes < 0 or list(self.buckets) != sorted(
                set(self.buckets)) or any(not isinstance(b, int) or b < 1 for b in self.buckets):
            raise ValueError(f"GraphPolicy: max_graphs and max_bytes must be >= 0 and buckets "
                             f"positive ints, ascending and distinct, got {self.max_graphs}, "
                             f"{self.max_bytes}, {self.buckets}")

    @classmethod
    def of(cls, options) -> "GraphPolicy":
        """The policy a ``CompilerOptions`` asks for."""
        return cls(options.cuda_graph_max_graphs, tuple(options.cuda_graph_buckets),
                   options.cuda_graph_max_bytes)

    def bucket(self, value: int) -> int:
        """The smallest bucket >= ``value``; ``value`` itself past the largest."""
        return next((b for b in self.buckets if b >= value), value)


class CudaGraphBackend(Protocol):
    """What the pool needs of CUDA graphs; tests hand in a fake one to run on CPU."""
    def pool_handle(self) -> Any: ...
    def capture(self, run: Callable[[], Sequence], pool) -> tuple[Any, tuple]:
        """``run()`` captured into memory pool ``pool``: (graph with ``replay()``, outputs)."""
    def synchronize(self) -> None: ...


class TorchCudaGraphs:
    """torch.cuda's graphs, every one captured into the pool ``pool_handle`` made."""
    def pool_handle(self):
        return torch.cuda.graph_pool_handle()

    def capture(self, run, pool):
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool):
            outputs = tuple(run())
        return graph, outputs

    def synchronize(self) -> None:
        torch.cuda.synchronize()


@dataclass
class _Entry:
    graph: Any
    static: list            # the user inputs' buffers, at the (padded) captured sizes
    outputs: tuple
    state: set = field(default_factory=set)   # data_ptrs of caller-owned tensors
    nbytes: int = 0                            # what it holds of its own (``_held_bytes``)


class GraphPool:
    """Captured graphs by key, least recently used evicted past ``max_graphs`` or past
    ``max_bytes`` held (each graph's input buffers and outputs; the newest graph always
    stays), all in one memory pool (made at the first capture)."""

    def __init__(self, max_graphs: int, backend: CudaGraphBackend, max_bytes: int = 1 << 62):
        self.max_graphs, self.backend, self.max_bytes = max_graphs, backend, max_bytes
        self._entries: OrderedDict[tuple, _Entry] = OrderedDict()
        self.handle = None
        self.captures = self.evictions = 0
        self.bytes = 0

    def full(self) -> bool:
        """A capture now would evict."""
        return len(self._entries) >= self.max_graphs or (
            bool(self._entries) and self.bytes >= self.max_bytes)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key) -> bool:
        return key in self._entries

    def oldest(self):
        """The key the next capture past the bound evicts."""
        return next(iter(self._entries))

    def get(self, key) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def capture(self, key, run: Callable[[], tuple], static: list, state: set) -> _Entry:
        """Capture ``run()`` as the graph for ``key``; evict the oldest past the bound."""
        if self.handle is None:
            self.handle = self.backend.pool_handle()
        self.backend.synchronize()
        graph, outputs = self.backend.capture(run, self.handle)
        self.captures += 1
        entry = self._entries[key] = _Entry(graph, static, outputs, state,
                                            _held_bytes(static, outputs, state))
        self.bytes += entry.nbytes
        while len(self._entries) > self.max_graphs or (
                self.bytes > self.max_bytes and len(self._entries) > 1):
            _, old = self._entries.popitem(last=False)   # its memory goes back to the pool
            self.bytes -= old.nbytes
            self.evictions += 1
        return entry

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0


def _held_bytes(static: list, outputs: tuple, state: set) -> int:
    """The bytes a graph keeps to itself: its input buffers and its outputs' storages
    (each once; the caller's tensors written in place are not its own)."""
    seen, total = set(), 0
    for t in (*static, *outputs):
        if isinstance(t, torch.Tensor) and t.data_ptr() not in state:
            storage = t.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                total += storage.nbytes()
    return total


def size_positions(specs: Sequence) -> dict[str, tuple[int, int]]:
    """Where each size symbol can be read: the first (flat input, dim) it names bare."""
    where: dict[str, tuple[int, int]] = {}
    for k, spec in enumerate(specs):
        for d, want in enumerate(spec.size):
            if isinstance(want, str) and want.isidentifier():
                where.setdefault(want, (k, d))
    return where


def sizes_from_data(specs: Sequence, flat: Sequence) -> dict[str, int]:
    """Each size symbol's value, read off the inputs' dims named by a bare symbol.

    Example:
        >>> from compiler.runtime import ExpectedInput
        >>> sizes_from_data([ExpectedInput(("s0", 4), ("4", 1), "torch.float32", "cpu")],
        ...                 [torch.ones(3, 4)])
        {'s0': 3}
    """
    return {s: flat[k].shape[d] for s, (k, d) in size_positions(specs).items()}


def size_value(size, sizes: dict) -> int:
    """A spec's size or stride (an int, or an expression's text) at the bound ``sizes``."""
    if isinstance(size, int):
        return size
    return sizes[size] if size in sizes else int(eval(_code(size), {"__builtins__": {}}, sizes))


def size_values(exprs: tuple, sizes: dict) -> tuple:
    """``size_value`` of each of ``exprs``, in one evaluation (an input's strides are
    checked on every call: one ``eval`` per stride cost a decode step ~40 of them)."""
    code = _tuple_code(tuple(exprs))
    return tuple(exprs) if code is None else \
        tuple(map(int, eval(code, {"__builtins__": {}}, sizes)))


@functools.lru_cache(maxsize=4096)
def _tuple_code(exprs: tuple):
    if all(isinstance(e, int) for e in exprs):
        return None
    return compile("(" + "".join(f"{e}," for e in exprs) + ")", "<sizes>", "eval")


@functools.lru_cache(maxsize=4096)
def _code(expr: str):
    """``expr`` compiled once: parsing it is most of an ``eval``, and checks run per call."""
    return compile(expr, "<size>", "eval")


def _real(length: int, symbol: str, sizes: dict, padded: dict) -> int:
    """The real part of a padded dim of ``k * symbol`` entries."""
    return length // padded[symbol] * sizes[symbol]


class DynamicGraphedCall:
    """Replays a dynamic-shape CUDA module from a ``GraphPool``: ``call(flat) -> outputs``.

    ``inputs``: the flat positions copied in per call (the user's); the others (weights,
    buffers written in place) are captured where they are, and a change of their storage
    starts over. ``plans``: padding plans (``graph_padding.plan_padding``) for the
    symbols ``policy.buckets`` may pad.
    """

    def __init__(self, compiled, inputs: Sequence[int], policy: GraphPolicy,
                 plans: Sequence[PaddingPlan] = (), backend: CudaGraphBackend | None = None):
        self.compiled, self.inputs, self.policy = compiled, list(inputs), policy
        self.plans = tuple(plans) if policy.buckets else ()
        self.pool = GraphPool(policy.max_graphs, backend or TorchCudaGraphs(), policy.max_bytes)
        self._where = size_positions(compiled.input_specs)    # read per call: kept
        self._keyed = set(self._where) == set(compiled.size_ranges)
        self._seen: OrderedDict[tuple, int] = OrderedDict()   # sightings per key
        self.failed: set[tuple] = set()
        self._state_key = None
        # the positions captured in place, listed once: scanning ~60 inputs against the
        # user positions on every call cost more than the replay
        user = set(self.inputs)
        self._state = [k for k in range(len(compiled.input_specs)) if k not in user]

    def __call__(self, flat: list):
        if not self._keyed or self.policy.max_graphs == 0:
            return self.compiled.run_unchecked(list(flat))   # a size no input shows: no key
        sizes = {s: flat[k].shape[d] for s, (k, d) in self._where.items()}
        state = [flat[k].data_ptr() for k in self._state if isinstance(flat[k], torch.Tensor)]
        if state != self._state_key:
            self.pool.clear()
            self._seen.clear()
            self._state_key = state
        padded = {s: self._padded(s, v) for s, v in sizes.items()}
        key = tuple(sorted(padded.items()))
        self._remember(key)
        entry = self.pool.get(key)
        if entry is None:
            if key in self.failed or not self._admits(key):
                return self._direct(flat, sizes, padded)
            entry = self._capture(key, flat, sizes, padded)
            if entry is None:
                return self._direct(flat, sizes, padded)
        for k, static in zip(self.inputs, entry.static):
            self._fill(static, flat[k], k, sizes, padded)
        entry.graph.replay()
        return self._finish(entry.outputs, sizes, padded, entry.state, clone=True)

    def _padded(self, symbol: str, value: int) -> int:
        """The bucket ``value`` pads to, where a plan allows it and the bucket is within
        the range the module was compiled for."""
        if not any(p.symbol == symbol for p in self.plans):
            return value
        bucket, (_, hi) = self.policy.bucket(value), self.compiled.size_ranges[symbol]
        return bucket if hi is None or bucket <= hi else value

    def _remember(self, key) -> None:
        self._seen[key] = self._seen.pop(key, 0) + 1
        while len(self._seen) > 64 * max(1, self.policy.max_graphs):   # a growing size
            self._seen.popitem(last=False)

    def _admits(self, key) -> bool:
        """Capture ``key`` now: seen before, and the pool has room or its least recently
        used graph was seen less often (a size seen once runs directly: a capture needs
        its kernels loaded, and a size that never recurs would waste it)."""
        count = self._seen[key]
        if count < 2:
            return False
        if not self.pool.full():
            return True
        return count > self._seen.get(self.pool.oldest(), 0)

    def _capture(self, key, flat: list, sizes: dict, padded: dict) -> _Entry | None:
        # the buffers hold this call's inputs (padding rows zero): a backend that runs
        # while capturing then computes what the replay will
        static = [self._buffer(k, padded).zero_() for k in self.inputs]
        captured = list(flat)
        for k, buf in zip(self.inputs, static):
            captured[k] = buf
            self._fill(buf, flat[k], k, sizes, padded)
        state = {t.data_ptr() for k, t in enumerate(flat)
                 if k not in self.inputs and isinstance(t, torch.Tensor)}
        try:
            return self.pool.capture(key, lambda: self.compiled.run_unchecked(list(captured)),
                                     static, state)
        except Exception as err:     # noqa: BLE001 - any capture failure falls back
            self.failed.add(key)
            warnings.warn(f"kiln: CUDA graph capture failed at sizes {dict(key)}: "
                          f"{type(err).__name__}: {err}; that size runs its kernels directly",
                          GraphCaptureWarning, stacklevel=4)
            return None

    def _buffer(self, k: int, padded: dict) -> torch.Tensor:
        """An input buffer laid out as compiled, at the padded sizes."""
        spec = self.compiled.input_specs[k]
        size = tuple(size_value(s, padded) for s in spec.size)
        stride = tuple(size_value(s, padded) for s in spec.stride)
        return torch.empty_strided(size, stride, dtype=getattr(torch, spec.dtype[6:]),
                                   device=spec.device)

    def _fill(self, buf: torch.Tensor, t, k: int, sizes: dict, padded: dict) -> None:
        """Copy ``t`` into the leading rows of ``buf`` (rows past it keep finite old data:
        a row-independent graph never lets them reach a real output)."""
        view = buf
        for plan in self.plans:
            if sizes[plan.symbol] != padded[plan.symbol]:
                for pos, dims in plan.inputs:
                    if pos == k:
                        for d in dims:        # a dim of k * s keeps its leading k * s
                            view = view.narrow(d, 0, _real(buf.shape[d], plan.symbol,
                                                           sizes, padded))
        view.copy_(t)

    def _direct(self, flat: list, sizes: dict, padded: dict):
        """Run the kernels without a graph, at the padded sizes when padding applies (the
        run before a capture must load the kernels the capture will launch)."""
        if padded == sizes:
            return self.compiled.run_unchecked(list(flat))
        run = list(flat)
        for k in self.inputs:
            run[k] = self._buffer(k, padded).zero_()
            self._fill(run[k], flat[k], k, sizes, padded)
        return self._finish(self.compiled.run_unchecked(run), sizes, padded, set(), False)

    def _finish(self, outputs, sizes: dict, padded: dict, state: set, clone: bool) -> tuple:
        """Outputs sliced back to the real sizes; graph-owned ones cloned (a later replay
        overwrites them), caller-owned ones (buffers written in place) as they are."""
        out = []
        for i, o in enumerate(outputs):
            if not isinstance(o, torch.Tensor) or o.data_ptr() in state:
                out.append(o)
                continue
            for plan in self.plans:
                if sizes[plan.symbol] != padded[plan.symbol]:
                    for d in plan.outputs[i]:
                        o = o.narrow(d, 0, _real(o.shape[d], plan.symbol, sizes, padded))
            out.append(o.clone() if clone else o)
        return tuple(out)


def dynamic_graphed_call(compiled, inputs: Sequence[int], cuda_graphs,
                         captured=None) -> DynamicGraphedCall | None:
    """The graphed call a dynamic CUDA module runs through, or None (graphs off, a static
    or CPU module). ``cuda_graphs``: False, True (the default policy) or a GraphPolicy.
    Buckets pad only symbols ``graph_padding`` proves row-independent on ``captured.gm``
    (a module loaded from a store has no graph: it replays per exact size); a refused
    symbol is warned about once and runs at its exact sizes."""
    if not cuda_graphs or compiled.static_cuda or compiled.artifact.meta["device"] != "cuda":
        return None
    policy = cuda_graphs if isinstance(cuda_graphs, GraphPolicy) else GraphPolicy()
    # graph_padding needs sympy (~0.35 s to import): only for a dynamic module with a graph
    from .graph_padding import PaddingRefusedError, plan_padding
    plans, gm = [], getattr(captured, "gm", None)
    for symbol in sorted(compiled.size_ranges) if policy.buckets and gm is not None else ():
        try:
            plans.append(plan_padding(gm, symbol))
        except PaddingRefusedError as err:
            warnings.warn(f"{err}; it runs at its exact sizes", GraphCaptureWarning,
                          stacklevel=3)
    return DynamicGraphedCall(compiled, inputs, policy, plans)
