"""What each victim did on its ordinary day, kept while the evidence pass streams.

A victim's *contacts* are the peers it opened connections to that matter for stages 5-7:
internal hosts on a lateral-movement port, by RPC, or on a dynamic RPC port (one contact
per host and port; every dynamic RPC port counts as one), and internet hosts (one contact
per address, whatever the port). For each contact the log keeps the first and last time
and the number of connections, so that afterwards one can ask whether the contact was
made before the victim's first internet session (the *baseline*) and how many first
contacts the host makes in an ordinary hour. After its first internet session, its
connection times to internet hosts are kept too, for the beacon test.

Nothing here holds a record: batches are aggregated with Arrow's hash aggregation as they
arrive, and partial aggregates are merged when they grow, so memory follows the number
of distinct contacts, not the input. Limits (``chain.yml``) bound what a single host can
make the log hold; a host past them is named, and its baseline is marked as capped.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rpcwatch.triage.chain import MICROS, EvidenceLimits

#: the port of an internet contact: its address alone identifies it
ANY_PORT = -1
#: the port of an internal contact on a dynamic RPC port: one class for all of them
DYNAMIC_RPC_PORT = -2
#: partial aggregates are merged once they hold this many rows
MERGE_ROWS = 1 << 20
_NEVER = np.iinfo(np.int64).max


@dataclass(frozen=True)
class ContactStats:
    first: int
    last: int
    count: int


@dataclass
class VictimBaseline:
    """One victim's ordinary day: what it did before its first internet session, and the
    statistics of every contact it made (before and after), read from the contact log's
    slice for this victim only when asked."""

    address: str
    #: the first internet session (µs)
    start: int
    first_record: int | None
    last_record: int | None
    #: the victim's own connection records before ``start``
    records: int
    capped: bool = False
    #: peer (its number in ``peers``), port, first, last, count of each contact
    _contacts: pa.Table | None = None
    #: peer, ts, sent of connections to internet peers after ``start``
    _times: pa.Table | None = None

    @property
    def span(self) -> int:
        """Microseconds the baseline covers (0 without records before the session)."""
        if self.first_record is None or self.first_record >= self.start:
            return 0
        return self.start - self.first_record

    def stats(self, keys: Iterable[tuple[int, int]]) -> dict[tuple[int, int], ContactStats]:
        """The statistics of the given contacts, (peer number, contact port), that the log has."""
        wanted = set(keys)
        if self._contacts is None or not wanted:
            return {}
        numbers = pa.array(sorted({peer for peer, _ in wanted}), pa.int32())
        rows = self._contacts.filter(pc.is_in(self._contacts.column("peer"), value_set=numbers))
        return {(peer, port): ContactStats(first, last, count)
                for peer, port, first, last, count in zip(*(rows.column(n).to_pylist() for n in _CONTACT_COLUMNS))
                if (peer, port) in wanted}

    def first_contacts(self, internet: bool, since: int, until: int) -> int:
        """Contacts of the kind (internet or internal) first made in ``[since, until)``."""
        if self._contacts is None:
            return 0
        first = self._contacts.column("first").to_numpy()
        kind = (self._contacts.column("port").to_numpy() == ANY_PORT) == internet
        return int(np.count_nonzero(kind & (first >= since) & (first < until)))

    @property
    def known_contacts(self) -> int:
        if self._contacts is None:
            return 0
        return int(np.count_nonzero(self._contacts.column("first").to_numpy() < self.start))

    def connection_times(self, peer: int) -> tuple[np.ndarray, np.ndarray]:
        """Times (epoch seconds) and bytes sent of the victim's connections to an internet
        peer (its number) after its first internet session."""
        if self._times is None:
            return np.empty(0), np.empty(0)
        rows = self._times.filter(pc.equal(self._times.column("peer"), pa.scalar(peer, pa.int32())))
        return rows.column("ts").to_numpy() / MICROS, rows.column("sent").to_numpy()

    def to_dict(self, too_short: bool) -> dict:
        return {"covers_from": _iso(self.first_record if self.span else None),
                "covers_to": _iso(self.start), "seconds": round(self.span / MICROS),
                "records": self.records, "contacts": self.known_contacts,
                "too_short": too_short, "capped": self.capped}


_CONTACT_COLUMNS = ("peer", "port", "first", "last", "count")


class ContactLog:
    """Streams the victims' connections into per-victim contact statistics.

    Victims are numbered (``victims`` order); ``starts`` are their first internet
    sessions (µs). Feed with :meth:`add_records` (every connection of a victim, for the
    span and count of its baseline) and :meth:`add_contacts` (the connections that make
    contacts); :meth:`baselines` gives one :class:`VictimBaseline` per victim."""

    def __init__(self, victims: Sequence[str], starts: Sequence[int], limits: EvidenceLimits):
        self.victims = list(victims)
        self.limits = limits
        self._starts = np.asarray(starts, dtype=np.int64)
        size = len(self.victims)
        self._first = np.full(size, _NEVER, dtype=np.int64)
        self._last = np.full(size, -_NEVER, dtype=np.int64)
        self._before = np.zeros(size, dtype=np.int64)
        self._capped = np.zeros(size, dtype=bool)
        self._contacts: list[pa.Table] = []
        self._contact_rows = 0
        self._times: list[pa.Table] = []
        self._time_rows = 0
        #: rows after the last merge: the next merge waits until as many have been added
        #: (a merge reads everything merged so far, so merges stay linear overall)
        self._merged_rows = 0
        self.beacon_times_full = False

    # ---- streaming -------------------------------------------------------------------------
    def add_records(self, victim: np.ndarray, micros: np.ndarray) -> None:
        """Connections of victims (indexes into ``victims``) at ``micros``."""
        np.minimum.at(self._first, victim, micros)
        np.maximum.at(self._last, victim, micros)
        np.add.at(self._before, victim, micros < self._starts[victim])

    def add_contacts(self, victim: np.ndarray, peer: np.ndarray, port: np.ndarray, micros: np.ndarray,
                     sent: np.ndarray) -> None:
        """Connections that make contacts: ``peer`` is the peer's number (the caller's
        numbering of canonical addresses), ``port`` is :data:`ANY_PORT` for internet peers,
        ``sent`` the bytes sent (NaN when not logged)."""
        keep = ~self._capped[victim]
        victim, peer, port, micros, sent = victim[keep], peer[keep], port[keep], micros[keep], sent[keep]
        if not len(victim):
            return
        rows = pa.table({"victim": victim.astype(np.int32), "peer": peer.astype(np.int32),
                         "port": port.astype(np.int32), "ts": micros})
        partial = rows.group_by(["victim", "peer", "port"]).aggregate([("ts", "min"), ("ts", "max"),
                                                                        ("ts", "count")])
        self._contacts.append(partial.rename_columns(["victim", "peer", "port", "first", "last", "count"]))
        self._contact_rows += partial.num_rows
        later = (port == ANY_PORT) & (micros >= self._starts[victim])
        if later.any() and not self.beacon_times_full:
            times = pa.table({"victim": victim[later].astype(np.int32), "peer": peer[later].astype(np.int32),
                              "ts": micros[later], "sent": sent[later].astype(np.float32)})
            self._times.append(times)
            self._time_rows += times.num_rows
        added = self._contact_rows + self._time_rows - self._merged_rows
        if added >= max(MERGE_ROWS, self._merged_rows):
            self._merge()

    def _merge(self) -> None:
        """Merge the partial aggregates; drop beacon times of contacts known before the
        session (they cannot be new); apply the limits."""
        if self._contacts:
            merged = pa.concat_tables(self._contacts).group_by(["victim", "peer", "port"]).aggregate(
                [("first", "min"), ("last", "max"), ("count", "sum")])
            self._contacts = [merged.rename_columns(["victim", "peer", "port", "first", "last", "count"])]
            self._contact_rows = self._contacts[0].num_rows
        self._cap_contacts()
        if self._times:
            times = pa.concat_tables(self._times)
            if self._contacts:
                known = self._known_internet_peers()
                times = times.join(known, ["victim", "peer"], join_type="left anti")
            self._times, self._time_rows = [times], times.num_rows
            if self._time_rows > self.limits.beacon_times:
                self.beacon_times_full = True
        self._merged_rows = self._contact_rows + self._time_rows

    def _known_internet_peers(self) -> pa.Table:
        contacts = self._contacts[0]
        victims = contacts.column("victim").to_numpy()
        before = (contacts.column("port").to_numpy() == ANY_PORT) & \
            (contacts.column("first").to_numpy() < self._starts[victims])
        return contacts.filter(pa.array(before)).select(["victim", "peer"])

    def _cap_contacts(self) -> None:
        if not self._contacts:
            return
        victims = self._contacts[0].column("victim").to_numpy()
        over = np.bincount(victims, minlength=len(self.victims)) > self.limits.contacts_per_victim
        if not over.any():
            return
        self._capped |= over
        keep = pa.array(~over[victims])
        self._contacts = [self._contacts[0].filter(keep)]
        self._contact_rows = self._contacts[0].num_rows
        if self._times:
            times = pa.concat_tables(self._times)
            self._times = [times.filter(pa.array(~over[times.column("victim").to_numpy()]))]

    # ---- results ---------------------------------------------------------------------------
    @property
    def capped(self) -> list[str]:
        return [self.victims[i] for i in np.flatnonzero(self._capped)]

    def baselines(self) -> dict[str, VictimBaseline]:
        """One baseline per victim."""
        self._merge()
        contacts = _by_victim(self._contacts[0] if self._contacts else None, ["peer", "port"])
        times = _by_victim(self._times[0] if self._times else None, ["peer", "ts"])
        baselines = {}
        for index, address in enumerate(self.victims):
            seen = self._first[index] != _NEVER
            baselines[address] = VictimBaseline(
                address, int(self._starts[index]), int(self._first[index]) if seen else None,
                int(self._last[index]) if seen else None, int(self._before[index]), bool(self._capped[index]),
                contacts.get(index), times.get(index))
        return baselines


def _by_victim(table: pa.Table | None, order: list[str]) -> dict[int, pa.Table]:
    """Zero-copy slices of ``table`` per victim index (sorted by victim, then ``order``)."""
    if table is None or table.num_rows == 0:
        return {}
    table = table.sort_by([("victim", "ascending")] + [(name, "ascending") for name in order])
    victims = table.column("victim").to_numpy()
    starts = np.flatnonzero(np.r_[True, victims[1:] != victims[:-1]])
    ends = np.r_[starts[1:], len(victims)]
    return {int(victims[lo]): table.slice(lo, hi - lo).drop_columns(["victim"]) for lo, hi in zip(starts, ends)}


def _iso(micros: int | None) -> str | None:
    from rpcwatch.alerts import iso_from_micros

    return None if micros is None else iso_from_micros(micros)
