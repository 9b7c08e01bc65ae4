"""``kiln bench --resume RUN``: finish a run over several sessions. The pairs (model, system)
that already have an ok row in the run are not run again; the others are, and the report
covers every row of the run.

A pair run again (an error, or skipped past the time budget) gets a row of its own
(``BenchRecord.build(attempt=...)``): the store keeps the first row of a key, so a second
row under the old key would never be read. Of a pair's rows, the latest one counts.

Example:
    >>> from storage import BenchRecord
    >>> def row(system, status, attempt=0):
    ...     return BenchRecord.build(run_id="r", model="m", system=system, attempt=attempt,
    ...                              config="z", status=status, device_name="cpu",
    ...                              torch_version="t", triton_version="t",
    ...                              compiler_version="c")
    >>> prior = Prior.of([row("eager", "ok"), row("kiln", "error"), row("kiln", "ok", 1)])
    >>> prior.done("m", "eager"), prior.done("m", "kiln"), prior.attempts[("m", "kiln")]
    (True, True, 2)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

Pair = tuple[str, str]     # (model, system)


@dataclass(frozen=True)
class Prior:
    """What a run already holds: its latest row per pair, and how many rows each pair has."""
    latest: Mapping[Pair, Any] = field(default_factory=dict)      # pair -> BenchRecord
    attempts: Mapping[Pair, int] = field(default_factory=dict)

    @classmethod
    def of(cls, records: Iterable[Any]) -> "Prior":
        latest: dict[Pair, Any] = {}
        attempts: dict[Pair, int] = {}
        for r in sorted(records, key=lambda r: r.timestamp):
            pair = (r.model, r.system)
            latest[pair] = r
            attempts[pair] = attempts.get(pair, 0) + 1
        return cls(latest, attempts)

    def done(self, model: str, system: str) -> bool:
        row = self.latest.get((model, system))
        return row is not None and row.status == "ok"

    def merged(self, records: Iterable[Any]) -> list[Any]:
        """The run's rows, one per pair: ``records`` (this session's, in their order) and
        then the earlier rows of the pairs it did not run."""
        records = list(records)
        ran = {(r.model, r.system) for r in records}
        return records + [r for pair, r in self.latest.items() if pair not in ran]


def read_run(store: Any, run_id: str) -> list[Any]:
    """Every ``BenchRecord`` of ``run_id`` in ``store`` (none: an empty list)."""
    import dataclasses

    import pyarrow.compute as pc

    from storage import BenchRecord
    names = {f.name for f in dataclasses.fields(BenchRecord)}
    table = store.query("bench", pc.field("run_id") == run_id)
    return [BenchRecord(**{k: v for k, v in row.items() if k in names})
            for row in table.to_pylist()]


def mismatch(records: Iterable[Any], config: str, quick: bool, device_name: str) -> str | None:
    """Why this session cannot add to the run of ``records`` (another zoo, mode or card),
    or None: a run's rows are compared with one another in its report."""
    for r in records:
        if (r.config, r.quick, r.device_name) != (config, quick, device_name):
            return (f"run {r.run_id} is {r.config} {'--quick' if r.quick else 'full'} on "
                    f"{r.device_name}; this is {config} {'--quick' if quick else 'full'} "
                    f"on {device_name}")
    return None
