"""The victims' own connections around their incidents, kept as columns.

Stages 5-7 are judged on what a victim did in the window after the source's direct
evidence. The evidence pass keeps those connections as numpy columns (who, to whom, which
port, when, what kind) and the matched rows themselves as Arrow tables; a record object
is made only of the connections that end up counted, so a network where half the hosts
are victims costs columns, not millions of objects.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

#: the columns of a victim's connection: its number, the peer's number (canonical
#: address), the peer's port and contact port (``baseline.py``), the time (µs), and kinds:
#: to the internet, reconnaissance (another internal host on a lateral port or by RPC),
#: moving laterally (a session with data, or remote execution called), established
COLUMNS = ("victim", "peer", "port", "contact", "micros", "internet", "recon", "moves", "established")


@dataclass(frozen=True)
class LaterView:
    """One victim's kept connections (columns, time-ordered) and their ids."""

    ids: np.ndarray
    columns: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]


class LaterConnections:
    def __init__(self, victims: int, limit: int):
        self.limit = limit
        self._kept = np.zeros(victims, dtype=np.int64)
        self._parts: list[dict[str, np.ndarray]] = []
        self._rows: list[tuple[str, str | None, pa.Table]] = []
        self._columns: dict[str, np.ndarray] = {}
        self._offsets: dict[int, tuple[int, int]] = {}
        #: victim numbers whose connections went past the limit
        self.full: set[int] = set()

    def add(self, table: str, path: str | None, rows: pa.Table, columns: dict[str, np.ndarray]) -> None:
        """Connections of victims (``rows``, with ``columns`` computed for them)."""
        victim = columns["victim"]
        keep = self._within_limit(victim)
        if not keep.all():
            rows = rows.filter(pa.array(keep))
            columns = {name: values[keep] for name, values in columns.items()}
        if not rows.num_rows:
            return
        columns = dict(columns, batch=np.full(rows.num_rows, len(self._rows), dtype=np.int64),
                       row=np.arange(rows.num_rows, dtype=np.int64))
        self._rows.append((table, path, rows))
        self._parts.append(columns)

    def _within_limit(self, victim: np.ndarray) -> np.ndarray:
        """Rows whose victim has not yet had ``limit`` connections kept, in order."""
        order = np.argsort(victim, kind="stable")
        ranked = victim[order]
        starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])
        rank = np.arange(len(ranked)) - np.repeat(starts, np.diff(np.r_[starts, len(ranked)]))
        allowed = np.empty(len(victim), dtype=bool)
        allowed[order] = self._kept[ranked] + rank < self.limit
        np.add.at(self._kept, victim[allowed], 1)
        self.full.update(int(v) for v in np.unique(victim[~allowed]))
        return allowed

    def finish(self) -> None:
        if not self._parts:
            return
        columns = {name: np.concatenate([part[name] for part in self._parts]) for name in self._parts[0]}
        self._parts = []
        order = np.lexsort((columns["micros"], columns["victim"]))
        self._columns = {name: values[order] for name, values in columns.items()}
        victims = self._columns["victim"]
        starts = np.flatnonzero(np.r_[True, victims[1:] != victims[:-1]])
        ends = np.r_[starts[1:], len(victims)]
        self._offsets = {int(victims[lo]): (int(lo), int(hi)) for lo, hi in zip(starts, ends)}

    def of(self, victim: int) -> LaterView | None:
        if victim not in self._offsets:
            return None
        lo, hi = self._offsets[victim]
        return LaterView(np.arange(lo, hi), {name: values[lo:hi] for name, values in self._columns.items()})

    def micros(self, ids: np.ndarray) -> np.ndarray:
        return self._columns["micros"][ids] if len(ids) else np.empty(0, dtype=np.int64)

    def rows(self, ids: np.ndarray) -> list[tuple[str, str | None, pa.Table]]:
        """The matched rows of the given connections, per input batch: (table, path, rows)."""
        found: list[tuple[str, str | None, pa.Table]] = []
        if not len(ids):
            return found
        batches, rows = self._columns["batch"][ids], self._columns["row"][ids]
        for batch in np.unique(batches):
            table, path, data = self._rows[batch]
            found.append((table, path, data.take(pa.array(np.sort(rows[batches == batch])))))
        return found

    def __len__(self) -> int:
        return sum(len(part["victim"]) for part in self._parts) or len(self._columns.get("victim", ()))
