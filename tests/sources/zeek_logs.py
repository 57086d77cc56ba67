"""Reading Zeek btest baselines as plain rows (their ts/uid are masked by btest)."""
from __future__ import annotations

import re
from pathlib import Path

ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|\\)")


def _unescape(value: str) -> str:
    """Zeek's ASCII writer escapes a backslash as ``\\\\`` and unprintable bytes as ``\\xNN``."""
    return ESCAPE.sub(lambda m: "\\" if m.group(1) == "\\" else chr(int(m.group(1)[1:], 16)), value)


def read_baseline(path: Path) -> list[dict[str, str | None]]:
    fields: list[str] = []
    rows = []
    for line in path.read_text().splitlines():
        if line.startswith("#fields"):
            fields = line.split("\t")[1:]
        elif line and not line.startswith("#"):
            values = [None if v == "-" else _unescape(v) for v in line.split("\t")]
            rows.append(dict(zip(fields, values)))
    return rows
