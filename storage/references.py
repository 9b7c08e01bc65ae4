"""References between records, for ``verify`` and ``repair``.

A module row names its kernels (``kernel_keys``) and its graph; binaries and trials rows name
one kernel each. Build and tune read a kernel's source from the kernels dataset, so a module
whose kernels rows are gone (a deleted or quarantined file) fails every rerun unless they are
restored, which they can be: each module row embeds its kernels (name, key, source, meta).

- *missing kernels* (a problem): a module names a kernel that no kernels row holds;
  ``repair`` and every run restore the rows from the module row.
- *dangling binaries* (a note: no module launches them, so nothing breaks): a binary of a
  kernel that no kernels row and no module holds; ``repair`` drops them (they are rebuilt,
  cheaply, if the kernel comes back).
- trials of such a kernel are a *note*: GPU timings are the expensive records, and lowering
  the same kernel again (same source, same key) reuses them.
- a module whose graph has no graphs row is a *note*: ``compile_module(cache=store)`` writes
  modules without graphs.

Example:
    >>> import pyarrow as pa
    >>> refs = References.from_tables({
    ...     "modules": pa.table({"module_key": ["m"], "graph_key": ["g"],
    ...                          "kernel_keys": [["k1", "k2"]]}),
    ...     "kernels": pa.table({"kernel_key": ["k1"]}),
    ...     "binaries": pa.table({"binary_key": ["b1", "b2"], "kernel_key": ["k2", "k9"]})})
    >>> refs.missing_kernels(), refs.dangling("binaries")
    ({'m': ['k2']}, {'b2': 'k9'})
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyarrow as pa

from .reader import Issue

if TYPE_CHECKING:
    from .store import Store

# The columns each kind contributes to the reference checks.
REF_COLUMNS = {
    "graphs": ["graph_key"],
    "modules": ["module_key", "graph_key", "kernel_keys"],
    "kernels": ["kernel_key"],
    "binaries": ["binary_key", "kernel_key"],
    "trials": ["trial_key", "kernel_key"],
}
KERNEL_USERS = ("binaries", "trials")


@dataclass
class References:
    """Who names whom in one store (intact rows only)."""
    graphs: set[str] = field(default_factory=set)
    kernels: set[str] = field(default_factory=set)
    module_kernels: dict[str, list[str]] = field(default_factory=dict)
    module_graph: dict[str, str] = field(default_factory=dict)
    users: dict[str, dict[str, str]] = field(default_factory=dict)   # kind -> {key: kernel}

    @classmethod
    def from_tables(cls, tables: dict[str, pa.Table]) -> "References":
        """From tables holding at least ``REF_COLUMNS`` of each kind (absent kinds: empty)."""
        def column(kind: str, name: str) -> list:
            table = tables.get(kind)
            return table.column(name).to_pylist() if table is not None else []
        refs = cls(graphs=set(column("graphs", "graph_key")),
                   kernels=set(column("kernels", "kernel_key")))
        for key, graph, kernels in zip(column("modules", "module_key"),
                                       column("modules", "graph_key"),
                                       column("modules", "kernel_keys")):
            refs.module_graph[key] = graph
            refs.module_kernels[key] = list(kernels or [])
        for kind in KERNEL_USERS:
            key_column = REF_COLUMNS[kind][0]
            refs.users[kind] = dict(zip(column(kind, key_column), column(kind, "kernel_key")))
        return refs

    @classmethod
    def read(cls, store: "Store", tables: dict[str, pa.Table] | None = None) -> "References":
        """From ``tables`` where given, the rest read from ``store`` (corrupt files and bad
        rows skipped silently: ``verify`` reports them on its own)."""
        tables = dict(tables or {})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for kind, columns in REF_COLUMNS.items():
                if kind not in tables:
                    tables[kind] = store.query(kind, columns=columns)
        return cls.from_tables(tables)

    def missing_kernels(self) -> dict[str, list[str]]:
        """``{module key: [kernel keys without a kernels row]}``."""
        missing = {}
        for module, kernels in self.module_kernels.items():
            gone = sorted(set(kernels) - self.kernels)
            if gone:
                missing[module] = gone
        return missing

    def dangling(self, kind: str) -> dict[str, str]:
        """``{row key: kernel key}`` of ``kind`` rows whose kernel no kernels row and no
        module holds."""
        known = self.kernels.union(*self.module_kernels.values())
        return {key: kernel for key, kernel in self.users.get(kind, {}).items()
                if kernel not in known}

    def modules_without_graph(self) -> list[str]:
        return sorted(m for m, g in self.module_graph.items() if g not in self.graphs)


def describe(refs: References, store_root: str) -> tuple[list[Issue], list[str]]:
    """(problems, notes) for ``verify``: one line each, counts and one example."""
    problems, notes = [], []
    missing = refs.missing_kernels()
    if missing:
        kernels = {k for keys in missing.values() for k in keys}
        module, keys = next(iter(sorted(missing.items())))
        problems.append(Issue(f"{store_root}/modules", f"{len(missing)} module(s) name "
                              f"{len(kernels)} kernel(s) that no kernels row holds, e.g. module "
                              f"{module[:16]} -> kernel {keys[0][:16]}; a run or `kiln store "
                              f"repair` restores them from the module rows"))
    dangling = refs.dangling("binaries")
    if dangling:
        key, kernel = next(iter(sorted(dangling.items())))
        notes.append(f"binaries: {len(dangling)} row(s) of kernels that no kernels row or "
                     f"module holds, e.g. {key[:16]} -> kernel {kernel[:16]}; no module "
                     f"launches them; `kiln store repair` drops them")
    trials = refs.dangling("trials")
    if trials:
        notes.append(f"trials: {len(trials)} row(s) of kernels no kernels row or module holds "
                     f"(kept: lowering the same kernel again reuses them)")
    orphans = refs.modules_without_graph()
    if orphans:
        notes.append(f"modules: {len(orphans)} module(s) without a graphs row "
                     f"(compile_module cache entries, or a lost graphs file: a run captures "
                     f"the graph again)")
    return problems, notes
