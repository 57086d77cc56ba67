"""Which rules can match which rows, before any rule is evaluated.

With hundreds of rules on one table (SigmaHQ's Windows rules), evaluating every rule on
every row is what makes Sigma engines slow. Most rules demand that some field contains a
literal (``Image|endswith: '\\whoami.exe'`` demands ``\\whoami.exe`` in ``Image``), often
several at once (an image and a command line; a Windows channel). One multi-literal pass
per field over a batch (Hyperscan's literal compiler, over the column's Arrow data buffer
as it is) finds, for every literal, the rows whose value holds it; a rule is then
evaluated only on the rows that satisfy every one of its clauses
(:func:`~rpcwatch.sigma.literals.field_clauses`; a keyword's literal in any value the
keyword searches). Rules without such literals (negations, regexes) are evaluated on
every row.
The index only narrows; the rule's full condition always decides.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import hyperscan
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rpcwatch.engines.query import original_name
from rpcwatch.matchers import cached_databases
from rpcwatch.sigma.literals import KEYWORD_FIELD, Clause
from rpcwatch.sigma.logsources import BoundRule
from rpcwatch.sigma.sql import keyword_columns


@dataclass(frozen=True)
class CandidateGroup:
    """Rules that demand the same literals, and the rows holding them."""

    rules: tuple[int, ...]
    rows: np.ndarray


class RuleIndex:
    def __init__(self, rules: Sequence[BoundRule]):
        self.always: list[int] = []
        by_clauses: dict[tuple[Clause, ...], list[int]] = defaultdict(list)
        for index, rule in enumerate(rules):
            # the log source's selection too (Channel, EventID): in the rows of one table
            # it keeps a rule to its own log's rows
            found = rule.clauses
            if found is None:
                self.always.append(index)
            elif all(found):
                by_clauses[found].append(index)
            # an empty clause: the rule can never match, nothing to evaluate
        self._groups = list(by_clauses.items())
        literal_ids: dict[tuple[str, str], int] = {}
        #: each group's clauses as the numbers of their literals
        self._group_clauses: list[list[tuple[int, ...]]] = [
            [tuple(literal_ids.setdefault(literal, len(literal_ids)) for literal in sorted(clause))
             for clause in clauses] for clauses, _ in self._groups]
        words: dict[str, list[tuple[bytes, int]]] = defaultdict(list)
        for (field, text), literal in literal_ids.items():
            words[field].append((text.encode("utf-8"), literal))
        self._databases = _literal_databases(words)
        self._literal_count = len(literal_ids)

    def candidates(self, view: pa.Table) -> Iterator[CandidateGroup]:
        """Groups of rules with the rows (positions in ``view``) worth evaluating them on:
        the rows that satisfy every clause of the group's rules."""
        column_of = _column_resolver(view.column_names)
        hits: list[list[np.ndarray]] = [[] for _ in range(self._literal_count)]
        for field, database in self._databases.items():
            if field == KEYWORD_FIELD:
                columns = keyword_columns({f.name: f.type for f in view.schema})
            else:
                columns = [column_of(field)] if column_of(field) is not None else []
            for column in columns:
                for literal, rows in _scan(database, view.column(column)).items():
                    hits[literal].append(rows)
        satisfying: dict[tuple[int, ...], np.ndarray] = {}  # rows per clause, shared by groups
        for (_, members), clauses in zip(self._groups, self._group_clauses):
            found = sorted((_clause_rows(clause, hits, satisfying) for clause in clauses), key=len)
            rows = found[0]
            for other in found[1:]:
                if not rows.size:
                    break
                rows = _intersection(rows, other)
            if rows.size:
                yield CandidateGroup(tuple(members), rows)


def _clause_rows(clause: tuple[int, ...], hits: list[list[np.ndarray]],
                 satisfying: dict[tuple[int, ...], np.ndarray]) -> np.ndarray:
    """The rows holding one of the clause's literals (sorted, each once): memory in
    proportion to the rows found, whatever the batch's size."""
    rows = satisfying.get(clause)
    if rows is None:
        found = [rows for literal in clause for rows in hits[literal]]
        if not found:
            rows = np.empty(0, np.int64)
        elif len(found) == 1:
            rows = found[0]
        else:
            rows = np.unique(np.concatenate(found))
        satisfying[clause] = rows
    return rows


def _intersection(few: np.ndarray, many: np.ndarray) -> np.ndarray:
    """The rows in both sorted arrays, in the time of a binary search per row of the smaller
    (a channel's clause can hold most of a batch; a rule's own clauses a few rows)."""
    if not many.size:
        return many
    at = np.minimum(np.searchsorted(many, few), len(many) - 1)
    return few[many[at] == few]


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


def _literal_databases(words: dict[str, list[tuple[bytes, int]]]) -> dict[str, hyperscan.Database]:
    """Each field's literal database (from the rule cache when compiled before)."""
    return cached_databases("rule index", sorted(words.items()),
                            lambda: {field: _literal_database(field_words) for field, field_words in words.items()})


def _literal_database(words: list[tuple[bytes, int]]) -> hyperscan.Database:
    """One Hyperscan database of a field's literals (pure literals: no pattern syntax, so
    any non-empty text compiles); a match reports the literal's number."""
    database = hyperscan.Database()
    database.compile(expressions=[word for word, _ in words], ids=[literal for _, literal in words],
                     elements=len(words), flags=0, literal=True)
    return database


#: Hyperscan scans at most 4 GiB at once; batches are far smaller (hunt.BATCH_BYTES), but a
#: column is scanned in pieces of at most this many bytes of text whatever it holds
SCAN_BYTES = 1 << 30


#: a column with at most one distinct value per this many rows (Channel, EventID, Provider_Name)
#: is scanned by its distinct values, each once, not value by value
DISTINCT_SHARE = 8
#: the rows looked at to guess whether a column has few distinct values
SAMPLE_ROWS = 1024


def _scan(database: hyperscan.Database, column: pa.ChunkedArray) -> dict[int, np.ndarray]:
    """Rows whose value (as lower-case text; lists joined) contains each literal."""
    if column.null_count:  # sparse columns (most Windows fields): only the rows that have a value
        present = pc.is_valid(column)
        row_of = np.flatnonzero(present.to_numpy(zero_copy_only=False))
        if not len(row_of):
            return {}
        column = column.filter(present)
    else:
        row_of = None
    values = column.combine_chunks()
    found = _scan_distinct(database, values) if _few_distinct(values) else None
    if found is None:
        found = _scan_text(database, _as_text(values))
    if row_of is not None:
        found = {literal: row_of[rows] for literal, rows in found.items()}
    return found


def _few_distinct(values: pa.Array) -> bool:
    if pa.types.is_list(values.type) or pa.types.is_large_list(values.type) or len(values) < 2 * SAMPLE_ROWS:
        return False
    sample = pc.count_distinct(values.slice(0, SAMPLE_ROWS)).as_py()
    return sample * DISTINCT_SHARE <= SAMPLE_ROWS


def _scan_distinct(database: hyperscan.Database, values: pa.Array) -> dict[int, np.ndarray] | None:
    """:func:`_scan_text` over the distinct values, each holder's rows (None: too many distinct values)."""
    encoded = pc.dictionary_encode(values)
    if len(encoded.dictionary) * DISTINCT_SHARE > len(encoded):
        return None
    found = _scan_text(database, _as_text(encoded.dictionary))
    if not found:
        return {}
    indices = encoded.indices.to_numpy(zero_copy_only=False)
    return {literal: np.flatnonzero(np.isin(indices, entries)) for literal, entries in found.items()}


def _scan_text(database: hyperscan.Database, text: pa.Array) -> dict[int, np.ndarray]:
    """Positions of the values of ``text`` (lower-case) that contain each literal."""
    literals: list[int] = []
    ends: list[int] = []

    def found(literal: int, _start: int, end: int, _flags: int, _context: object) -> None:
        literals.append(literal)
        ends.append(end)

    # byte offsets: values are UTF-8 and so are the literals, so a byte match is a character match
    offsets = _value_offsets(text)
    first = 0
    while first < len(text):
        last = int(np.searchsorted(offsets, offsets[first] + SCAN_BYTES, side="right")) - 1
        last = max(last, first + 1)
        base = len(ends)
        database.scan(_value_bytes(text, offsets, first, last), match_event_handler=found)
        if first:  # ends relative to this piece's first byte
            ends[base:] = [end + int(offsets[first] - offsets[0]) for end in ends[base:]]
        first = last
    if not ends:
        return {}
    # the value holding a match's last byte (a match across two values makes the second a candidate)
    rows = np.searchsorted(offsets[1:] - offsets[0], np.asarray(ends, np.int64) - 1, side="right")
    literal_array = np.asarray(literals)
    return {int(literal): np.unique(rows[literal_array == literal]) for literal in np.unique(literal_array)}


def _value_offsets(text: pa.Array) -> np.ndarray:
    """The offsets of a string array's values in its data buffer (one more than values)."""
    offset_type = np.int64 if pa.types.is_large_string(text.type) else np.int32
    offsets = np.frombuffer(text.buffers()[1], dtype=offset_type)[text.offset:text.offset + len(text) + 1]
    return offsets.astype(np.int64)


def _value_bytes(text: pa.Array, offsets: np.ndarray, first: int, last: int) -> bytes:
    """Values ``first`` to ``last`` (exclusive) as one bytes object, straight from Arrow's data
    buffer (no Python object per value). Values are not separated: a literal found across
    two values only makes the second a candidate, and candidates are always checked by the rule."""
    data = text.buffers()[2]
    if data is None:
        return b""
    return data[int(offsets[first]):int(offsets[last])].to_pybytes()


def _as_text(column: pa.Array) -> pa.Array:
    """The values as lower-case text, lists joined, nulls as empty text."""
    kind = column.type
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        column = pc.binary_join(pc.cast(column, pa.list_(pa.string())), "\x1f")
    elif not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        column = pc.cast(column, pa.string())
    return pc.fill_null(pc.utf8_lower(column), "")
