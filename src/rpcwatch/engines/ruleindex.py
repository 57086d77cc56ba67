"""Which rules can match which rows, before any rule is evaluated.

With hundreds of rules on one table (SigmaHQ's Windows rules), evaluating every rule on
every row is what makes Sigma engines slow. Most rules demand that some field contains a
literal (``Image|endswith: '\\whoami.exe'`` demands ``\\whoami.exe`` in ``Image``). One
Aho-Corasick pass per field over a batch finds, for every literal, the rows whose value
holds it; a rule is then evaluated only on the rows holding one of its literals (a
keyword's literal in any value the keyword searches). Rules without such literals
(negations, regexes) are evaluated on every row.
The index only narrows; the rule's full condition always decides.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import ahocorasick
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rpcwatch.engines.query import original_name
from rpcwatch.sigma.literals import KEYWORD_FIELD, field_literals
from rpcwatch.sigma.logsources import BoundRule
from rpcwatch.sigma.sql import keyword_columns


@dataclass(frozen=True)
class CandidateGroup:
    """Rules that share the literals they demand, and the rows holding one of them."""

    rules: tuple[int, ...]
    rows: np.ndarray


class RuleIndex:
    def __init__(self, rules: Sequence[BoundRule]):
        self.always: list[int] = []
        by_literals: dict[frozenset, list[int]] = defaultdict(list)
        for index, rule in enumerate(rules):
            found = field_literals(rule.parts()[1])
            if found:
                by_literals[found].append(index)
            elif found is None:
                self.always.append(index)
            # an empty set: the rule can never match, nothing to evaluate
        self._groups = [(tuple(members), literals) for literals, members in by_literals.items()]
        literal_ids: dict[tuple[str, str], int] = {}
        self._group_literals: list[list[int]] = []
        for _, literals in self._groups:
            ids = [literal_ids.setdefault((field, text), len(literal_ids)) for field, text in literals]
            self._group_literals.append(ids)
        self._automata: dict[str, ahocorasick.Automaton] = {}
        for (field, text), literal in literal_ids.items():
            automaton = self._automata.setdefault(field, ahocorasick.Automaton())
            automaton.add_word(text, literal)
        for automaton in self._automata.values():
            automaton.make_automaton()
        self._literal_count = len(literal_ids)

    def candidates(self, view: pa.Table) -> Iterator[CandidateGroup]:
        """Groups of rules with the rows (positions in ``view``) worth evaluating them on."""
        column_of = _column_resolver(view.column_names)
        hits: list[list[np.ndarray]] = [[] for _ in range(self._literal_count)]
        for field, automaton in self._automata.items():
            if field == KEYWORD_FIELD:
                columns = keyword_columns({f.name: f.type for f in view.schema})
            else:
                columns = [column_of(field)] if column_of(field) is not None else []
            for column in columns:
                for literal, rows in _scan(automaton, view.column(column)).items():
                    hits[literal].append(rows)
        for (members, _), literals in zip(self._groups, self._group_literals):
            found = [rows for literal in literals for rows in hits[literal]]
            if found:
                yield CandidateGroup(members, np.unique(np.concatenate(found)))


def _column_resolver(names: list[str]):
    """field -> the column the field reads: the column of that exact name where there is
    one, else the first whose name differs only in case (as the SQL printer resolves
    fields). Columns may differ only in case; their SQL names then carry a collision
    mark (see engines/query.py)."""
    exact = {original_name(name): name for name in names}
    folded: dict[str, str] = {}
    for name in names:
        folded.setdefault(original_name(name).lower(), name)
    return lambda field: exact.get(field) or folded.get(field.lower())


def _scan(automaton: ahocorasick.Automaton, column: pa.ChunkedArray) -> dict[int, np.ndarray]:
    """Rows whose value (as lower-case text; lists joined) contains each literal."""
    present = pc.is_valid(column)
    if column.null_count:  # sparse columns (most Windows fields): only the rows that have a value
        row_of = np.flatnonzero(present.to_numpy(zero_copy_only=False))
        if not len(row_of):
            return {}
        column = column.filter(present)
    else:
        row_of = None
    text = pc.fill_null(_as_text(column), "").combine_chunks()
    joined = _concatenated(text)
    # characters (not bytes) per row, as the automaton counts positions in the str
    ends = np.cumsum(pc.utf8_length(text).to_numpy(zero_copy_only=False).astype(np.int64))
    positions, literals = [], []
    for end, literal in automaton.iter(joined):
        positions.append(end)
        literals.append(literal)
    if not positions:
        return {}
    rows = np.searchsorted(ends, np.asarray(positions), side="right")
    if row_of is not None:
        rows = row_of[rows]
    literal_array = np.asarray(literals)
    found = {}
    for literal in np.unique(literal_array):
        found[int(literal)] = np.unique(rows[literal_array == literal])
    return found


def _concatenated(text: pa.Array) -> str:
    """All values of a string array as one str, straight from Arrow's data buffer (no
    Python object per value). Values are not separated: a literal found across two values
    only makes the second a candidate, and candidates are always checked by the rule."""
    if not len(text):
        return ""
    offset_type = np.int64 if pa.types.is_large_string(text.type) else np.int32
    offsets = np.frombuffer(text.buffers()[1], dtype=offset_type)[text.offset:text.offset + len(text) + 1]
    data = text.buffers()[2]
    return data[int(offsets[0]):int(offsets[-1])].to_pybytes().decode("utf-8") if data is not None else ""


def _as_text(column: pa.ChunkedArray) -> pa.ChunkedArray:
    kind = column.type
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        column = pc.binary_join(pc.cast(column, pa.list_(pa.string())), "\x1f")
    elif not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        column = pc.cast(column, pa.string())
    return pc.utf8_lower(column)
