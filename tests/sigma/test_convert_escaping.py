"""Rule text is attacker-controlled (a shared rule file): in ``rules convert`` output it
stays inside comments and literals in every target."""
from __future__ import annotations

import io

import duckdb
import pytest
import yaml

from rpcwatch.outputs.conversion import write_conversion
from rpcwatch.sigma.convert import comment_line, convert, table_schema
from rpcwatch.sigma.targets import targets

#: each title is one of the reported break-outs; what follows a line break (or, for Splunk,
#: the comment's delimiter) must stay in the comment
TITLES = {
    "sql": ("x\nCREATE TABLE pwned AS SELECT 1; --", ["CREATE TABLE pwned"]),
    "splunk": ("a ``` | delete ```", ["| delete"]),
    "line comments": ("t\n// a\n# b\n-- c\r| delete\u2028| delete\x85| delete", ["// a", "# b", "-- c", "| delete"]),
}
#: the value's own break-out attempts (quotes of every language, a pipe, a statement)
HOSTILE_RULE = """title: {title}
id: 4b1c0d9e-8f7a-4e6d-9c5b-3a2f1e0d9c8b
logsource: {{product: windows, service: system}}
detection:
    selection:
        'ServiceName"x`y''z': "v\\"a'l`ue\\n| sendemail ``` ; DROP TABLE t; --"
    condition: selection
level: low
"""


def hostile_output(tmp_path, target: str, title: str) -> str:
    rule = tmp_path / "hostile.yml"
    escaped = title.encode("unicode_escape").decode().replace('"', '\\"')
    rule.write_text(HOSTILE_RULE.format(title=f'"{escaped}"'), encoding="utf-8")
    result = convert([str(rule)], target, bundled=False)
    assert [(c.title, c.problem) for c in result.conversions] == [(title, None)]
    stream = io.StringIO()
    write_conversion(result, stream)
    return stream.getvalue()


def outside_literals(text: str, quotes: str) -> str:
    """The text with every quoted literal removed (backslash escapes; a doubled backtick
    inside backticks is one)."""
    kept, quote, index = [], None, 0
    while index < len(text):
        char = text[index]
        if quote is None:
            if char in quotes:
                quote = char
            else:
                kept.append(char)
        elif char == "\\" and quote != "`":
            index += 1
        elif char == quote:
            if quote == "`" and text[index + 1:index + 2] == "`":
                index += 1
            else:
                quote = None
        index += 1
    return "".join(kept)


@pytest.mark.parametrize("case", TITLES.values(), ids=TITLES.keys())
@pytest.mark.parametrize("target", sorted(targets()))
def test_a_title_stays_one_comment_line(tmp_path, target, case):
    title, payloads = case
    output = hostile_output(tmp_path, target, title)
    line = comment_line(target, f"{title} (4b1c0d9e-8f7a-4e6d-9c5b-3a2f1e0d9c8b)")
    assert line in output.splitlines() and len(line.splitlines()) == 1
    body = output.replace(line + "\n", "", 1)
    if target == "elastalert":  # a YAML rule: the title is its name, quoted by the YAML writer
        assert yaml.safe_load(body)["name"] == title
        body = yaml.safe_dump({key: value for key, value in yaml.safe_load(body).items() if key != "name"})
    assert not [payload for payload in payloads if payload in body]
    if target == "splunk":  # nothing closes the block comment before its end
        assert line.startswith("``` ") and line.endswith(" ```") and "`" not in line[4:-4]


@pytest.mark.parametrize("target", ["splunk", "esql", "kusto", "eql", "splunk_spl2", "duckdb", "spark-sql"])
def test_values_and_field_names_stay_literals(tmp_path, target):
    title = TITLES["sql"][0]
    output = hostile_output(tmp_path, target, title)
    comment = comment_line(target, f"{title} (4b1c0d9e-8f7a-4e6d-9c5b-3a2f1e0d9c8b)")
    queries = "\n".join(row for row in output.splitlines() if row != comment)
    bare = outside_literals(queries, "\"'`")
    assert "sendemail" not in bare and "DROP" not in bare and ";" not in bare.strip().rstrip(";")
    assert "sendemail" in queries


def test_lucene_field_names_escape_every_special_character(tmp_path):
    output = hostile_output(tmp_path, "lucene", TITLES["sql"][0])
    [query] = [row for row in output.splitlines() if row.startswith("ServiceName")]
    assert query.startswith('ServiceName\\"x`y\'z:"v\\"a\'l`ue')


def test_duckdb_output_runs_without_running_what_the_title_holds(tmp_path):
    """The whole output as one script: the rule's query runs, the title's statement does not."""
    output = hostile_output(tmp_path, "duckdb", TITLES["sql"][0])
    con = duckdb.connect()
    schema = table_schema("windows", ['ServiceName"x`y\'z'])
    con.execute("CREATE TABLE windows (" + ", ".join(
        f'"{name.replace(chr(34), chr(34) * 2)}" {"BIGINT" if str(dtype) == "int64" else "VARCHAR"}'
        for name, dtype in zip(schema.names, schema.types)) + ")")
    con.execute(output)
    assert con.sql("SELECT table_name FROM information_schema.tables ORDER BY 1").fetchall() == [("windows",)]
