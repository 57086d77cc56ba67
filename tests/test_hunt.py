"""End-to-end detection counts: real corpus files and generated logs with ground truth."""
from __future__ import annotations

import gzip
import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from documents import documents

from rpcwatch.config import Config
from rpcwatch.engines.duckdb import DuckDBEngine
from rpcwatch.hunt import Hunt, plan_hunt
from rpcwatch.sources import expand_inputs

RPC = "Detect RPC from Internet"
DCE = "DCE/RPC from Internet"


def hunt(paths, config=None, prefilter=True, rules=(), bundled=True):
    plan = plan_hunt(rules, config, bundled=bundled, prefilter=prefilter)
    run = Hunt(list(expand_inputs([str(p) for p in paths])), plan, DuckDBEngine())
    return documents(run, plan.config), run.report


def zeek_expectations(corpus: Path) -> dict[str, int]:
    """SOURCES.md: per Zeek file, the documented internet->TCP/135 count."""
    expected = {}
    for line in (corpus / "SOURCES.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 6 and cells[2].startswith("`") and "Zeek" in cells[5]:
            expected[cells[2].strip("`")] = int(cells[6])
    return expected


def test_corpus_zeek_files_raise_exactly_the_documented_alerts(corpus):
    expected = zeek_expectations(corpus)
    assert len(expected) > 80 and sum(expected.values()) == 31
    alerts, report = hunt([corpus / path for path in expected])
    by_file = Counter(Path(a["log"]["file"]["path"]).relative_to(corpus).as_posix()
                      for a in alerts if a["rule"]["name"] == RPC)
    assert {p: by_file.get(p, 0) for p in expected} == expected
    # the one DCE/RPC session from the internet in the corpus: a scanner binding on Modbus's
    # port 502, which Zeek recognised as dce_rpc (not TCP/135, so not in the counts above)
    modbus = "zeek-btest/testing/btest/Baseline/scripts.base.protocols.modbus.modbus_and_non_modbus_on_port_502/conn.log"
    assert [(Path(a["log"]["file"]["path"]).relative_to(corpus).as_posix(), a["original"]["uid"])
            for a in alerts if a["rule"]["name"] == DCE] == [(modbus, "ClEkJM2Vm5giqnMf4h")]
    assert all(s.error is None and s.skipped_total == 0 for s in report.stats)


def test_rita_alerts_are_the_scanners_all_rejected(corpus):
    alerts, _ = hunt([corpus / "rita"])
    assert len(alerts) == 31
    assert {a["event"]["outcome"] for a in alerts} == {"rejected"}
    assert {a["destination"]["ip"] for a in alerts} == {"64.225.56.201"}
    assert {a["destination"]["port"] for a in alerts} == {135}
    sources = Counter(a["source"]["ip"] for a in alerts)
    assert sources["83.97.73.157"] == 2 and sources["172.104.242.173"] == 2 and len(sources) == 29
    first = min(alerts, key=lambda a: a["@timestamp"])
    assert first["@timestamp"] == "2024-04-19T01:03:47.117664Z"
    assert first["original"]["uid"] == "C8spCJhr6b5Xd0NBf"
    assert first["original"]["_node_name"] == "worker-eth0-1"
    assert first["rule"] == {"id": "2b7c31f6-f350-4d05-97f8-c35173dbbd12", "name": RPC, "level": "high",
                             "tags": ["attack.initial-access", "attack.t1133", "attack.t1190"],
                             "reference": "rpcwatch/rules/zeek_conn_rpc_from_internet.yml"}


def test_rita_is_silent_when_the_sensor_network_is_not_trusted(corpus):
    """The RITA sensor has a public address: only Zeek's local_resp makes it internal. A
    configuration whose internal list excludes it still alerts through local_resp."""
    config = Config().with_internal(["10.99.0.0/16"])
    alerts, _ = hunt([corpus / "rita"], config)
    assert len(alerts) == 31


def test_internal_networks_make_a_source_internal(corpus):
    config = Config().with_internal(["10.0.0.0/8", "152.32.0.0/16"])
    alerts, _ = hunt([corpus / "rita"], config)
    assert len(alerts) == 29  # 152.32.151.121 and 152.32.164.18 are now ours


def test_examples():
    repo_root = Path(__file__).resolve().parent.parent
    alerts, report = hunt([repo_root / "examples"])
    counts = Counter(a["rule"]["name"] for a in alerts)
    assert counts == {RPC: 7, DCE: 6, "Remote Execution over DCE/RPC from Internet": 2,
                      "Detect RPC from Internet - Windows": 1,
                      "RPC Sweep from Internet": 1, "RPC from Internet Followed by Remote Execution": 1}
    assert report.records == 25


# ---- generated logs with ground truth ---------------------------------------------------

@pytest.fixture(scope="module")
def generated(shared_tools, tmp_path_factory):
    """100k rows with 1 % TCP/135, as TSV and JSON, plain and gzip, with the generator's truth."""
    folder = tmp_path_factory.mktemp("generated")
    made = {}
    for fmt in ("tsv", "json"):
        out = folder / f"conn.{fmt}.log"
        subprocess.run([sys.executable, str(shared_tools / "gen_zeek_conn.py"), "--rows", "100000",
                        "--seed", "7", "--rpc-rate", "0.01", "--format", fmt, "--out", str(out)],
                       check=True, capture_output=True)
        truth = json.loads(Path(f"{out}.truth.json").read_text())
        Path(f"{out}.truth.json").unlink()
        gz = folder / f"conn.{fmt}.log.gz"
        with open(out, "rb") as src, gzip.open(gz, "wb") as dst:
            shutil.copyfileobj(src, dst)
        made[fmt] = (out, truth)
        made[f"{fmt}.gz"] = (gz, truth)
    return made


@pytest.mark.parametrize("variant", ["tsv", "json", "tsv.gz", "json.gz"])
@pytest.mark.parametrize("prefilter", [True, False])
def test_generated_logs_match_ground_truth(generated, variant, prefilter):
    path, truth = generated[variant]
    alerts, report = hunt([path], prefilter=prefilter)
    counts = Counter(a["rule"]["name"] for a in alerts)
    assert counts[RPC] == truth["expected_matches"] > 400
    assert report.records == truth["rows"]
    ipv6 = sum(1 for a in alerts if a["rule"]["name"] == RPC and ":" in a["source"]["ip"])
    assert ipv6 == truth["matches_by_category"]["ext6->int6"]


def test_generated_tsv_and_json_give_the_same_alerts(generated):
    keys = []
    for variant in ("tsv", "json"):
        alerts, _ = hunt([generated[variant][0]])
        keys.append(sorted((a["rule"]["name"], a["original"]["uid"]) for a in alerts))
    assert keys[0] == keys[1]


def test_prefilter_changes_nothing_but_speed(generated):
    with_filter, _ = hunt([generated["tsv"][0]], prefilter=True)
    without, _ = hunt([generated["tsv"][0]], prefilter=False)
    assert [a["original"]["uid"] for a in with_filter] == [a["original"]["uid"] for a in without]


def test_uids_are_unique_per_rule(generated):
    alerts, _ = hunt([generated["tsv"][0]])
    seen = Counter((a["rule"]["name"], a["original"]["uid"]) for a in alerts)
    assert max(seen.values()) == 1
    assert all(re.fullmatch(r"C[A-Za-z0-9]{15,17}", uid) for _, uid in seen)
