"""What each victim did on its ordinary day, kept while the evidence pass streams.

A victim's *contacts* are the peers it opened connections to that matter for stages 5-7:
internal hosts on a lateral-movement port, by RPC, or on a dynamic RPC port (one contact
per host and port; every dynamic RPC port counts as one), and internet hosts (one contact
per address, whatever the port). For each contact the log keeps the first and last time
and the number of connections, so that afterwards one can ask whether the contact was
made before the victim's first internet session (the *baseline*) and how many first
contacts the host makes in an ordinary hour. After its first internet session, its
connection times to internet hosts are kept too, for the beacon test.

Nothing here holds a record: a batch's connections arrive as columns of numbers (victim,
peer, port, time), which are aggregated (sorted, then each run of one contact reduced)
once they have grown as large as what is already aggregated, so memory follows the number
of distinct contacts and the work stays linear. Limits (``chain.yml``) bound what a single host can
make the log hold; a host past them is named, and its baseline is marked as capped.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from rpcwatch.alerts import iso_from_micros
from rpcwatch.triage.chain import MICROS, EvidenceLimits

#: the port of an internet contact: its address alone identifies it
ANY_PORT = -1
#: the port of an internal contact on a dynamic RPC port: one class for all of them
DYNAMIC_RPC_PORT = -2
#: connections gathered before the first aggregation (about 20 bytes each)
MERGE_ROWS = 1 << 22
_NEVER = np.iinfo(np.int64).max
_CONTACT = ("victim", "peer", "port", "first", "last", "count")
_TIMES = ("victim", "peer", "ts", "sent")


def contact_key(peer, port):
    """A contact (peer number, contact port) as one number; works on arrays and scalars."""
    return (peer * (1 << 20)) + (port + 8)


@dataclass(frozen=True)
class ContactStats:
    first: int
    last: int
    count: int


def _empty(names: Sequence[str]) -> dict[str, np.ndarray]:
    return {name: np.empty(0, dtype=np.int64) for name in names}


@dataclass
class VictimBaseline:
    """One victim's ordinary day: what it did before its first internet session, and the
    statistics of every contact it made (before and after), as columns."""

    address: str
    #: the first internet session (µs)
    start: int
    first_record: int | None
    last_record: int | None
    #: the victim's own connection records before ``start``
    records: int
    capped: bool = False
    #: peer (number), port, first, last, count of each contact
    contacts: dict[str, np.ndarray] = field(default_factory=lambda: _empty(_CONTACT))
    #: peer, ts, sent of its connections to internet peers after ``start``
    times: dict[str, np.ndarray] = field(default_factory=lambda: _empty(_TIMES))

    @property
    def span(self) -> int:
        """Microseconds the baseline covers (0 without records before the session)."""
        if self.first_record is None or self.first_record >= self.start:
            return 0
        return self.start - self.first_record

    def stats(self, keys: Iterable[tuple[int, int]]) -> dict[tuple[int, int], ContactStats]:
        """The statistics of the given contacts, (peer number, contact port), that the log has."""
        wanted = np.fromiter((contact_key(peer, port) for peer, port in keys), dtype=np.int64)
        contacts = self.contacts
        rows = np.flatnonzero(np.isin(contact_key(contacts["peer"], contacts["port"]), wanted))
        return {(peer, port): ContactStats(first, last, count) for peer, port, first, last, count in zip(
            *(contacts[name][rows].tolist() for name in ("peer", "port", "first", "last", "count")))}

    def first_contacts(self, internet: bool, since: int, until: int) -> np.ndarray:
        """The times contacts of the kind (internet or internal) were first made in ``[since, until)``."""
        first = self.contacts["first"]
        kind = (self.contacts["port"] == ANY_PORT) == internet
        return first[kind & (first >= since) & (first < until)]

    @property
    def known_contacts(self) -> int:
        return int(np.count_nonzero(self.contacts["first"] < self.start))

    def connection_times(self, peer: int) -> tuple[np.ndarray, np.ndarray]:
        """Times (epoch seconds) and bytes sent of the victim's connections to an internet
        peer (its number) after its first internet session."""
        mine = self.times["peer"] == peer
        return self.times["ts"][mine] / MICROS, self.times["sent"][mine]

    def to_dict(self, too_short: bool) -> dict:
        return {"covers_from": _iso(self.first_record if self.span else None),
                "covers_to": _iso(self.start), "seconds": round(self.span / MICROS),
                "records": self.records, "contacts": self.known_contacts,
                "too_short": too_short, "capped": self.capped}


class ContactLog:
    """Streams the victims' connections into per-victim contact statistics.

    Victims are numbered (``victims`` order); ``starts`` are their first internet
    sessions (µs). Feed with :meth:`add_records` (every connection of a victim, for the
    span and count of its baseline) and :meth:`add_contacts` (the connections that make
    contacts); :meth:`baselines` gives one :class:`VictimBaseline` per victim."""

    def __init__(self, victims: Sequence[str], starts: Sequence[int] | np.ndarray, limits: EvidenceLimits):
        self.victims = list(victims)
        self.limits = limits
        self._starts = np.asarray(starts, dtype=np.int64)
        size = len(self.victims)
        self._first = np.full(size, _NEVER, dtype=np.int64)
        self._last = np.full(size, -_NEVER, dtype=np.int64)
        self._before = np.zeros(size, dtype=np.int64)
        self._capped = np.zeros(size, dtype=bool)
        #: the aggregate so far (sorted by victim, peer, port), then connections not yet in it
        self._contacts: dict[str, np.ndarray] = _empty(_CONTACT)
        self._new: list[dict[str, np.ndarray]] = []
        self._times: list[dict[str, np.ndarray]] = []
        self._added = 0
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
        self._new.append({"victim": victim.astype(np.int32), "peer": peer.astype(np.int32),
                          "port": port.astype(np.int32), "ts": micros})
        later = (port == ANY_PORT) & (micros >= self._starts[victim])
        if later.any() and not self.beacon_times_full:
            self._times.append({"victim": victim[later].astype(np.int32), "peer": peer[later].astype(np.int32),
                                "ts": micros[later], "sent": sent[later].astype(np.float32)})
        self._added += len(victim)
        if self._added >= max(MERGE_ROWS, len(self._contacts["victim"])):
            self._merge()

    def _merge(self) -> None:
        """Aggregate the contacts (sort, then reduce each run of one contact); drop the
        beacon times of contacts known before the session (they cannot be new); apply the
        limits."""
        if self._new:
            new = {name: np.concatenate([part[name] for part in self._new]) for name in ("victim", "peer", "port",
                                                                                         "ts")}
            self._new = []
            old = self._contacts
            columns = {name: np.concatenate([old[name], new[name]]) for name in ("victim", "peer", "port")}
            first = np.concatenate([old["first"], new["ts"]])
            last = np.concatenate([old["last"], new["ts"]])
            count = np.concatenate([old["count"], np.ones(len(new["ts"]), dtype=np.int64)])
            order = np.lexsort((columns["port"], columns["peer"], columns["victim"]))
            columns = {name: values[order] for name, values in columns.items()}
            starts = _run_starts(columns["victim"], columns["peer"], columns["port"])
            self._contacts = {name: values[starts] for name, values in columns.items()} | {
                "first": np.minimum.reduceat(first[order], starts), "last": np.maximum.reduceat(last[order], starts),
                "count": np.add.reduceat(count[order], starts)}
            self._cap_contacts()
        if self._times:
            times = {name: np.concatenate([part[name] for part in self._times]) for name in _TIMES}
            known = self._known_internet_peers()
            self._times = [{name: values[~np.isin(_pair(times), known)] for name, values in times.items()}]
            self.beacon_times_full |= len(self._times[0]["ts"]) > self.limits.beacon_times
        self._added = 0

    def _known_internet_peers(self) -> np.ndarray:
        """(victim, peer) pairs of internet contacts made before the victim's session."""
        contacts = self._contacts
        before = (contacts["port"] == ANY_PORT) & (contacts["first"] < self._starts[contacts["victim"]])
        return _pair({name: values[before] for name, values in contacts.items()})

    def _cap_contacts(self) -> None:
        victims = self._contacts["victim"]
        over = np.bincount(victims, minlength=len(self.victims)) > self.limits.contacts_per_victim
        if not over.any():
            return
        self._capped |= over
        self._contacts = {name: values[~over[victims]] for name, values in self._contacts.items()}
        self._times = [{name: values[~over[part["victim"]]] for name, values in part.items()} for part in self._times]

    # ---- results ---------------------------------------------------------------------------
    @property
    def capped(self) -> list[str]:
        return [self.victims[i] for i in np.flatnonzero(self._capped)]

    def baselines(self) -> dict[str, VictimBaseline]:
        """One baseline per victim."""
        self._merge()
        contacts = _by_victim(self._contacts)  # sorted by victim, peer and port when merged
        times = _by_victim(self._times[0], ["peer", "ts"]) if self._times else {}
        baselines = {}
        for index, address in enumerate(self.victims):
            seen = self._first[index] != _NEVER
            baseline = VictimBaseline(
                address, int(self._starts[index]), int(self._first[index]) if seen else None,
                int(self._last[index]) if seen else None, int(self._before[index]), bool(self._capped[index]))
            if index in contacts:
                baseline.contacts = contacts[index]
            if index in times:
                baseline.times = times[index]
            baselines[address] = baseline
        return baselines


def _run_starts(*keys: np.ndarray) -> np.ndarray:
    """Where each run of equal keys begins in sorted columns."""
    changed = np.zeros(len(keys[0]), dtype=bool)
    if len(changed):
        changed[0] = True
    for key in keys:
        changed[1:] |= key[1:] != key[:-1]
    return np.flatnonzero(changed)


def _pair(columns: dict[str, np.ndarray]) -> np.ndarray:
    """(victim, peer) as one number, for set membership."""
    return (columns["victim"].astype(np.int64) << 32) | columns["peer"].astype(np.int64)


def _by_victim(columns: dict[str, np.ndarray], order: list[str] | None = None) -> dict[int, dict[str, np.ndarray]]:
    """Per victim number, views of the columns, after sorting them by victim and then
    ``order`` (None: they are sorted already)."""
    if not len(columns["victim"]):
        return {}
    if order is not None:
        rows = np.lexsort([columns[name] for name in reversed(order)] + [columns["victim"]])
        columns = {name: values[rows] for name, values in columns.items()}
    victims = columns["victim"]
    starts = _run_starts(victims)
    ends = np.r_[starts[1:], len(victims)]
    return {int(victims[lo]): {name: values[lo:hi] for name, values in columns.items() if name != "victim"}
            for lo, hi in zip(starts, ends)}


def _iso(micros: int | None) -> str | None:
    return None if micros is None else iso_from_micros(micros)
