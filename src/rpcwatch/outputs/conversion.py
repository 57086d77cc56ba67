"""``rules convert`` output: each rule's queries under a comment naming the rule."""
from __future__ import annotations

from typing import IO

from rpcwatch.sigma.convert import ConversionResult

#: how each target writes a line comment (Lucene has none: the line is for the reader)
COMMENTS = {"splunk": "``` {} ```", "lucene": "# {}", "esql": "// {}", "kusto": "// {}",
            "spark-sql": "-- {}", "duckdb": "-- {}"}


def write_conversion(result: ConversionResult, stream: IO[str]) -> None:
    comment = COMMENTS[result.target]
    if result.prelude:
        stream.write(comment.format("address keys for exact CIDR matching (run once per session)") + "\n")
        stream.write("".join(f"{statement};\n" for statement in result.prelude) + "\n")
    terminator = ";" if result.target in ("spark-sql", "duckdb") else ""
    for item in result.conversions:
        if not item.queries:
            continue
        stream.write(comment.format(f"{item.title} ({item.id})") + "\n")
        stream.write("".join(f"{query}{terminator}\n" for query in item.queries) + "\n")
