"""``kiln store export``: the rows a server needs for some models, copied into a new store.

A zoo's store holds every model, the binaries of every GPU architecture and every autotune
trial; a serving host needs, for the models it serves: their modules rows (untuned and
tuned, every target), the kernels rows those name, the binaries of those kernels built for
its GPU architecture at the configs the modules launch, their graphs rows, and the best
trials of their kernels on that architecture (what tuning chose, for ``kiln store best``).
``export_models`` copies exactly those into a new store, which ``Store.load_model`` uses the
same way.

Rows are read through the source store's checks (content hash; signature when the source
is signed) and written with the store's key when it has one: exporting an unsigned store
with a key configured signs what it ships, the exporter vouching for rows that were only
hash-checked (the report says so). A store counts as signed if it has the marker or any
signed row, so deleting a signed store's marker does not get unsigned rows signed.

Example:
    >>> import tempfile
    >>> from storage import Store
    >>> store = Store(tempfile.mkdtemp(), key=None)
    >>> try:
    ...     export_models(store, ["mlp"], "sm_90", tempfile.mkdtemp() + "/out")
    ... except ExportError as err:
    ...     print(str(err).split(" in store")[0])
    no model named mlp
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from .records import canonical_json, derived_key

if TYPE_CHECKING:
    from .store import Store

# Written in this order, each kind as one file: a module row last, so that a reader of the
# new store never finds a module whose kernels and binaries are not there yet.
ORDER = ("graphs", "kernels", "binaries", "trials", "modules")
_ARCH = re.compile(r"^sm_\d+a?$")


class ExportError(ValueError):
    """An export that cannot be made: unknown models, a bad architecture, a used ``out``."""


@dataclass(frozen=True)
class KindCopy:
    """What one dataset of the export holds."""
    kind: str
    rows: int
    bytes: int


@dataclass(frozen=True)
class ExportReport:
    """What ``export_models`` wrote: rows and bytes per kind, the key that signed them
    (its fingerprint; None when unsigned) and notes (a module that will not serve on the
    architecture)."""
    root: str
    models: tuple[str, ...]
    arch: str
    copied: tuple[KindCopy, ...]
    signed_with: str | None
    notes: tuple[str, ...] = ()

    @property
    def rows(self) -> int:
        return sum(c.rows for c in self.copied)

    @property
    def bytes(self) -> int:
        return sum(c.bytes for c in self.copied)


def export_models(store: "Store", names: Iterable[str], arch: str, out: str) -> ExportReport:
    """Copy the rows that serve models ``names`` on GPUs of ``arch`` (e.g. "sm_90") from
    ``store`` into a new store at ``out`` (a path or URI that is absent or empty)."""
    from .store import Store
    names = tuple(dict.fromkeys(names))
    if not _ARCH.match(arch):
        raise ExportError(f"--arch {arch!r}: a GPU architecture is written like sm_90")
    target = Store(out, key=store.key)
    _require_empty(target)
    source = _source(store)
    modules = _modules(source, names)
    tables = rows_to_copy(source, modules, arch)
    copied = tuple(_write(target, kind, tables[kind]) for kind in ORDER)
    notes = _unserved(modules, tables["binaries"], arch)
    if target.key is not None and not source.require_signatures:
        notes.append(f"{store.root} is not signed: its rows (content hashes checked) are "
                     f"signed with key {target.key.fingerprint} by this export")
    return ExportReport(root=target.root, models=names, arch=arch, copied=copied,
                        signed_with=target.key.fingerprint if target.key else None,
                        notes=tuple(notes))


def _require_empty(target: "Store") -> None:
    selector = pafs.FileSelector(target.root, allow_not_found=True)
    info = target.fs.get_file_info(target.root)
    if info.type == pafs.FileType.File or target.fs.get_file_info(selector):
        raise ExportError(f"{target.root} is not empty: export writes a new store")


def _source(store: "Store") -> "Store":
    """``store`` as export reads it: signatures checked when it is signed; an unsigned
    store's rows are hash-checked only, even with a key configured (the key then signs
    the copy)."""
    from .store import Store
    if store.key is None or store.marker() is not None or _any_signed(store):
        return store
    return Store(store.root, filesystem=store.fs, migrations=store.migrations,
                 strict=store.strict, key=store.key, require_signatures=False)


def _any_signed(store: "Store") -> bool:
    """Whether any row of ``store`` carries a signature (read without checking anything)."""
    for kind in ("modules", "kernels", "binaries", "graphs"):
        signatures = store.query(kind, columns=["signature"], verify=False)["signature"]
        if signatures.null_count < len(signatures):
            return True
    return False


def _modules(source: "Store", names: tuple[str, ...]) -> pa.Table:
    """Every intact modules row of ``names``; an unknown name is an ``ExportError`` naming
    the models the store holds (and any row of theirs it refused)."""
    table, refused = source.query_with_refusals("modules", pc.field("model").isin(names))
    found = set(table.column("model").to_pylist())
    unknown = [n for n in names if n not in found]
    if unknown:
        held = sorted({m for m in source.query("modules", columns=["model"])
                       .column("model").to_pylist() if m})
        raise ExportError(f"no model named {', '.join(unknown)} in store {source.root} "
                          f"(it holds {', '.join(held) or 'no named models'})"
                          + "".join(f"; refused {issue}" for issue in refused))
    return table


def _launched(rows: list[dict]) -> set[tuple[str, str]]:
    """(kernel key, config key) of every kernel launch of the modules ``rows``' wrappers."""
    from .artifacts import artifact_from_row
    pairs = set()
    for row in rows:
        for kernel in artifact_from_row(row).kernels:
            if kernel.spec.launch.params and not kernel.spec.candidate:
                config = canonical_json(kernel.spec.launch.config().as_dict())
                pairs.add((kernel.kernel_key, derived_key(config)))
    return pairs


def rows_to_copy(source: "Store", modules: pa.Table, arch: str) -> dict[str, pa.Table]:
    """The rows of each kind that serve ``modules`` on ``arch`` (see the module doc)."""
    kernel_keys = sorted({k for keys in modules.column("kernel_keys").to_pylist()
                          for k in keys})
    graph_keys = sorted(set(modules.column("graph_key").to_pylist()))
    of_kernels = pc.field("kernel_key").isin(kernel_keys)
    binaries = source.query("binaries", of_kernels & (pc.field("arch") == arch)
                            & (pc.field("status") == "ok"))
    launched = _launched(modules.to_pylist())
    wanted = [(k, c) in launched for k, c in zip(binaries.column("kernel_key").to_pylist(),
                                                 binaries.column("config_key").to_pylist())]
    return {
        "graphs": source.lookup("graphs", graph_keys),
        "kernels": source.lookup("kernels", kernel_keys),
        "binaries": binaries.filter(pa.array(wanted, pa.bool_())),
        "trials": source.query("trials", of_kernels & (pc.field("arch") == arch)
                               & (pc.field("is_best") == True)),  # noqa: E712
        "modules": modules,
    }


def _write(target: "Store", kind: str, table: pa.Table) -> KindCopy:
    path = target.write(kind, table)
    size = target.fs.get_file_info(path).size if path else 0
    return KindCopy(kind, table.num_rows, size)


def _unserved(modules: pa.Table, binaries: pa.Table, arch: str) -> list[str]:
    """A note per CUDA module some of whose launched kernels have no binary for ``arch``:
    ``load_model`` will miss it on such a GPU."""
    have = set(zip(binaries.column("kernel_key").to_pylist(),
                   binaries.column("config_key").to_pylist()))
    notes = []
    for row in modules.filter(pc.field("target") == "cuda").to_pylist():
        missing = _launched([row]) - have
        if missing:
            notes.append(f"module {row['module_key'][:12]} ({row['model']}, cuda): "
                         f"{len(missing)} kernel launch(es) have no {arch} binary; it will not "
                         f"serve on {arch} GPUs")
    return notes
