"""Keyword (field-less) rules and Sigma filter documents, end to end."""
from __future__ import annotations

import json
import textwrap

from documents import documents

from rpcwatch.engines.duckdb import DuckDBEngine
from rpcwatch.hunt import Hunt, plan_hunt
from rpcwatch.sources import expand_inputs

TSV = ("#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\thttp\n"
       "#fields\tts\tuid\tid.orig_h\tuser_agent\tstatus_code\n#types\ttime\tstring\taddr\tstring\tcount\n"
       "1.0\tC1\t1.2.3.4\tMozilla/5.0 (evil\\x20scanner)\t200\n"
       "2.0\tC2\t1.2.3.5\tcurl/8.0\t404\n")

KEYWORD_RULE = """
title: Keyword
logsource: {product: zeek, service: http}
detection:
    keywords:
        - 'NEEDLE'
    condition: keywords
"""


def hunt_with(tmp_path, rule_text: str, log_name: str, log_text: str, prefilter=True, filters=()):
    rules = tmp_path / "rules"
    rules.mkdir(exist_ok=True)
    (rules / "rule.yml").write_text(textwrap.dedent(rule_text))
    (tmp_path / log_name).write_text(log_text)
    plan = plan_hunt([str(rules)], bundled=False, prefilter=prefilter, filters=filters)
    assert not plan.problems, plan.problems
    return documents(Hunt(list(expand_inputs([str(tmp_path / log_name)])), plan, DuckDBEngine()))


def test_tsv_keywords_search_the_raw_line(tmp_path):
    """The raw TSV line still has Zeek's escapes; the parsed value does not."""
    for prefilter in (True, False):
        raw = hunt_with(tmp_path, KEYWORD_RULE.replace("NEEDLE", "evil\\\\x20scanner"), "http.log", TSV, prefilter)
        assert [a["original"]["uid"] for a in raw] == ["C1"]
        numbers = hunt_with(tmp_path, KEYWORD_RULE.replace("NEEDLE", "404"), "http.log", TSV, prefilter)
        assert [a["original"]["uid"] for a in numbers] == ["C2"]  # the raw line has the count as text


def test_json_keywords_search_string_values(tmp_path):
    lines = "\n".join(json.dumps(r) for r in [
        {"ts": 1.0, "uid": "C1", "id.orig_h": "1.2.3.4", "user_agent": "Mozilla/5.0 (evil scanner)", "status_code": 200},
        {"ts": 2.0, "uid": "C2", "id.orig_h": "1.2.3.5", "user_agent": "curl/8.0", "status_code": 404},
    ]) + "\n"
    assert [a["original"]["uid"] for a in hunt_with(tmp_path, KEYWORD_RULE.replace("NEEDLE", "EVIL scan"),
                                                     "http.log", lines)] == ["C1"]
    # numbers are not text in JSON: a keyword does not see them
    assert hunt_with(tmp_path, KEYWORD_RULE.replace("NEEDLE", "404"), "http.log", lines) == []


def test_a_filter_document_tunes_the_named_rule(tmp_path):
    scanners = tmp_path / "filters.yml"
    scanners.write_text(textwrap.dedent("""
        title: Known research scanners
        logsource: {product: zeek, service: conn}
        filter:
            rules:
                - 2b7c31f6-f350-4d05-97f8-c35173dbbd12   # Detect RPC from Internet
            selection:
                id.orig_h|cidr: 45.83.64.0/24
            condition: not selection
        """))
    plan = plan_hunt(filters=[str(scanners)])
    assert plan.rule_set.filters == {"Known research scanners": 1}
    alerts = documents(Hunt(list(expand_inputs(["examples"])), plan, DuckDBEngine()))
    rpc = [a["source"]["ip"] for a in alerts if a["rule"]["name"] == "Detect RPC from Internet"]
    assert "45.83.64.17" not in rpc and len(rpc) == 2
    assert not any(a["rule"]["name"] == "RPC Sweep from Internet" for a in alerts)
