"""One escaping function per medium for text that came from a log or a rule.

Log content and rule text are attacker-controlled. Every string that reaches a terminal
or a CSV cell passes the function for that medium here (HTML is escaped by the report's
template engine; generated queries by their target's printer)."""
from __future__ import annotations

import json
from typing import Any

#: a spreadsheet reads a cell starting with one of these as a formula (OWASP CSV injection)
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")


def terminal_text(value: Any) -> str:
    """Printable text only: control characters (terminal escapes, bidi overrides, line
    breaks) become ``\\xNN``/``\\uNNNN`` as Zeek writes them, so a log value can neither
    move the cursor nor restyle the terminal. Rich markup is not interpreted where the
    result is wrapped in ``rich.text.Text`` (outputs/table.py does)."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}"
                   for c in text)


def csv_cell(value: Any) -> str:
    """A CSV cell a spreadsheet shows as text: a value that would start a formula is
    prefixed with a quote. Line breaks inside a cell are kept; the writer must quote them
    (outputs/csv.py uses RFC 4180's CRLF, so a lone CR is quoted too)."""
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        text = json.dumps(value, ensure_ascii=False)
    else:
        text = str(value)
    if isinstance(value, str) and text.startswith(FORMULA_START):
        return "'" + text
    return text
