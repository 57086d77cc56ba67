"""Reading Windows corpus files the way the CLI does, and comparing values the Sigma way."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import evtx
import pyarrow as pa

from rpcwatch.sources import LogReading, ReadStats, expand_inputs
from rpcwatch.sources.prefilter import PrefilterPlan


@dataclass
class Reading:
    rows: list[dict]
    stats: ReadStats
    batches: list[pa.Table]


def read(path: Path | str, prefilter: PrefilterPlan | None = None) -> Reading:
    """One input read through LogReading (sniffing included), as rows."""
    reading = LogReading(list(expand_inputs([str(path)])), prefilter=prefilter)
    batches = [batch.data for batch in reading.batches()]
    assert len(reading.stats) == 1
    return Reading([row for table in batches for row in table.to_pylist()], reading.stats[0], batches)


def parser_records(path: Path, **options) -> list[dict]:
    """What the evtx parser itself yields, with the options the reader uses (and more)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return list(evtx.PyEvtxParser(str(path), skip_errors=True, **options).records_json())


def sigma_text(value) -> str | None:
    """A value as Sigma compares it: as text, booleans as ``true``/``false``."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def port_135_events(rows: list[dict]) -> list[tuple]:
    """Sysmon 3 and Security 5156/5157 rows with 135 on either end, as
    (EventID, source, source port, destination, destination port, direction, image)."""
    found = []
    for row in rows:
        if row["EventID"] == 3:
            ends = ("SourceIp", "SourcePort", "DestinationIp", "DestinationPort", "Initiated", "Image")
        elif row["EventID"] in (5156, 5157):
            ends = ("SourceAddress", "SourcePort", "DestAddress", "DestPort", "Direction", "Application")
        else:
            continue
        values = [sigma_text(row.get(name)) for name in ends]
        if "135" in (values[1], values[3]):
            image = values[5].replace("/", "\\").rsplit("\\", 1)[-1].lower()
            found.append((row["EventID"], values[0], int(values[1]), values[2], int(values[3]), values[4], image))
    return sorted(found)
