"""``rules convert`` output: each rule's queries under a comment naming the rule."""
from __future__ import annotations

from typing import IO

from rpcwatch.sigma.convert import ConversionResult, comment_line

#: targets whose statements end with a semicolon
SQL_TARGETS = ("spark-sql", "duckdb")


def write_conversion(result: ConversionResult, stream: IO[str]) -> None:
    if result.prelude:
        _write_comment(stream, result.target, "address keys for exact CIDR matching (run once per session)")
        stream.write("".join(f"{statement};\n" for statement in result.prelude) + "\n")
    terminator = ";" if result.target in SQL_TARGETS else ""
    for item in result.conversions:
        if not item.queries:
            continue
        _write_comment(stream, result.target, f"{item.title} ({item.id})")
        stream.write("".join(f"{query}{terminator}\n" for query in item.queries) + "\n")


def _write_comment(stream: IO[str], target: str, text: str) -> None:
    line = comment_line(target, text)
    if line is not None:
        stream.write(line + "\n")
