"""The HTML report: self-contained, escaped, and what a browser really shows."""
from __future__ import annotations

import json
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from browser import RecordingProxy, run_chromium
from test_cli import rpcwatch_command

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "artifacts"
HOSTILE = "<script>alert(1)</script>"
#: a file name cannot hold '/', so the file name carries an attribute injection instead
HOSTILE_FILE = "<img src=x onerror=alert(2)>.log"
URL_ATTRIBUTES = {"src", "href", "action", "formaction", "data", "poster", "srcset", "xlink:href", "background"}


class _Page(HTMLParser):
    """Tags, attributes and text of a page, as a browser's parser sees them."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def count(self, tag: str, css: str | None = None) -> int:
        return sum(1 for t, a in self.tags if t == tag and (css is None or css in (a.get("class") or "").split()))

    @property
    def all_text(self) -> str:
        return "".join(self.text)


def hostile_logs(folder: Path) -> None:
    """Zeek JSON logs whose every string field is an injection attempt."""
    conn = {"ts": 1732960900.5, "uid": HOSTILE, "id.orig_h": "167.94.138.45", "id.orig_p": 40000,
            "id.resp_h": "10.20.0.40", "id.resp_p": 135, "proto": "tcp", "service": HOSTILE, "history": HOSTILE,
            "conn_state": "SF", "orig_bytes": 10, "resp_bytes": 10}
    rpc = {"ts": 1732960900.6, "uid": HOSTILE, "id.orig_h": "167.94.138.45", "id.orig_p": 40000,
           "id.resp_h": "10.20.0.40", "id.resp_p": 135, "named_pipe": HOSTILE, "endpoint": HOSTILE,
           "operation": HOSTILE}
    (folder / HOSTILE_FILE).write_text(json.dumps(conn) + "\n")
    (folder / "dce_rpc.log").write_text(json.dumps(rpc) + "\n")
    rules = folder / "rules"
    rules.mkdir()
    (rules / "hostile.yml").write_text(
        f"title: '{HOSTILE}'\ndescription: '{HOSTILE}'\nlevel: high\ntags: [attack.initial-access]\n"
        "logsource: {product: zeek, service: conn}\n"
        f"detection:\n  sel: {{conn_state: SF}}\n  condition: sel\nrpcwatch:\n  investigation: '{HOSTILE}'\n")


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("report")
    shutil.copytree(REPO / "examples", folder / "examples")
    hostile_logs(folder)
    out = folder / "report.html"
    result = subprocess.run(rpcwatch_command() + ["report", ".", "--rules", "rules", "-o", str(out), "-q"],
                            cwd=folder, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return out


def test_report_is_self_contained(report):
    html = report.read_text(encoding="utf-8")
    page = _Page(html)
    assert page.count("script") == 0
    fetching = [(tag, name) for tag, attrs in page.tags for name in attrs if name in URL_ATTRIBUTES]
    assert fetching == []
    assert not {"link", "img", "iframe", "object", "embed", "base", "audio", "video", "source"} & {t for t, _ in page.tags}
    csp = next(a["content"] for t, a in page.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy")
    assert csp.startswith("default-src 'none'; style-src 'sha256-")
    # the only URL in the markup is SVG's namespace name, which is never fetched
    assert {a.get("xmlns") for t, a in page.tags if t == "svg"} == {"http://www.w3.org/2000/svg"}
    assert "url(" not in html and "@import" not in html


def test_every_log_value_is_shown_as_text(report):
    page = _Page(report.read_text(encoding="utf-8"))
    assert not any(name.startswith("on") for _, attrs in page.tags for name in attrs)
    text = page.all_text
    # uid (alerts, evidence), service and endpoint/operation (reasons, summaries), named pipe,
    # rule title, description and guide: each shown, never parsed
    assert text.count(HOSTILE) >= 8
    assert HOSTILE_FILE in text
    assert f"DCE/RPC {HOSTILE} {HOSTILE} on TCP/135 from 167.94.138.45" in text
    assert f"TCP/135 ({HOSTILE}) from 167.94.138.45" in text


def test_report_sections(report):
    page = _Page(report.read_text(encoding="utf-8"))
    assert page.count("svg", "chart") == 3
    assert page.count("details", "incident") == 2  # the examples' intruder and the hostile log's session
    assert page.count("tr", "exposed") == 2  # 10.20.0.12 and the hostile log's 10.20.0.40
    assert page.count("tr", "scan") == 2  # the examples' sweep and IPv6 probe, folded
    text = page.all_text
    assert "INC-0001 · 167.94.138.44 · stage 7 Persistence / C2 (direct: 4) · critical" in text
    assert "What to check" in text  # the bundled rules' guides


def test_what_to_do_now_comes_first_in_order(report):
    page = _Page(report.read_text(encoding="utf-8"))
    sections = [a.get("id") for t, a in page.tags if t == "section"]
    assert sections[0] == "todo"
    steps = ["".join(item).strip() for item in _items(report.read_text(encoding="utf-8"), "action")]
    assert steps[0].startswith("Isolate 10.20.0.12 (FS-12.corp.example): INC-0001: 167.94.138.44 executed code "
                               "remotely (stage 4, direct)")
    assert steps[1].startswith("Investigate 10.20.0.40: INC-0002: 167.94.138.45 negotiated RPC on it (stage 3")
    assert len(steps) == 2  # both exposed hosts are listed already
    assert "6 probe(s) of TCP/135 from 2 internet source(s) on 2 target(s) were refused or unanswered" in page.all_text


def test_every_rule_that_alerted_has_its_guide_correlations_too(report):
    html = report.read_text(encoding="utf-8")
    rules = _items(html, "rule", tag="details")
    titles = {"".join(r).split(" · ")[0].strip() for r in rules}
    assert {"RPC Sweep from Internet (correlation)",
            "RPC from Internet Followed by Remote Execution (correlation)"} <= titles
    sweep = next("".join(r) for r in rules if "RPC Sweep from Internet (correlation)" in "".join(r))
    assert "How many of the swept hosts answered" in sweep  # the correlation's own guide


def test_alerts_are_in_time_order_with_the_badge_of_their_finding(report):
    rows = _rows(report.read_text(encoding="utf-8"), "alert")
    times = [row[0] for row in rows]
    assert times == sorted(times)
    probes = [row for row in rows if "from 45.83.64.17 (internet)" in row[4]]
    assert probes and {row[1] for row in probes} == {"SCAN-0001 low"}  # not the rule's "high"
    intruder = [row for row in rows if "from 167.94.138.44 (internet)" in row[4]]
    assert {row[1] for row in intruder} == {"INC-0001 critical"}


def test_alerts_without_a_destination_draw_no_bar(report):
    page = _Page(report.read_text(encoding="utf-8"))
    charts = [a.get("aria-label") for t, a in page.tags if t == "svg"]
    assert "top destinations" in charts
    titles = [text for text in page.text if text.endswith(tuple(f": {n}" for n in range(1, 50)))]
    assert not any(title.startswith("-: ") for title in titles)


def _items(html: str, css: str, tag: str = "li") -> list[list[str]]:
    """The text of each element with class ``css``."""
    items, depth, current = [], 0, None

    class Parser(HTMLParser):
        def handle_starttag(self, name, attrs):
            nonlocal depth, current
            if current is not None and name == tag:
                depth += 1
            if name == tag and css in (dict(attrs).get("class") or "").split() and current is None:
                current, depth = [], 1

        def handle_endtag(self, name):
            nonlocal depth, current
            if current is not None and name == tag:
                depth -= 1
                if depth == 0:
                    items.append(current)
                    current = None

        def handle_data(self, data):
            if current is not None:
                current.append(data)

    Parser(convert_charrefs=True).feed(html)
    return items


def _rows(html: str, css: str) -> list[list[str]]:
    """The cells' text of each table row with class ``css``."""
    rows: list[list[str]] = []

    class Parser(HTMLParser):
        row = None

        def handle_starttag(self, name, attrs):
            if name == "tr" and css in (dict(attrs).get("class") or "").split():
                self.row = []
            elif name == "td" and self.row is not None:
                self.row.append("")

        def handle_endtag(self, name):
            if name == "tr" and self.row is not None:
                rows.append([" ".join(cell.split()) for cell in self.row])
                self.row = None

        def handle_data(self, data):
            if self.row:
                self.row[-1] += data

    Parser(convert_charrefs=True).feed(html)
    return rows


def test_big_inputs_keep_the_page_small_with_the_full_data_beside(tmp_path):
    """More alerts than the page lists: the first ones on the page, all of them beside it."""
    lines = [json.dumps({"ts": 1713488627.0 + n, "uid": f"C{n:05d}", "id.orig_h": f"45.83.{n // 250}.{n % 250 + 1}",
                         "id.orig_p": 40000, "id.resp_h": "10.0.0.5", "id.resp_p": 135, "proto": "tcp",
                         "conn_state": "REJ"}) for n in range(700)]
    (tmp_path / "conn.log").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out" / "report.html"
    out.parent.mkdir()
    result = subprocess.run(rpcwatch_command() + ["report", "conn.log", "-o", str(out), "-q"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    page = _Page(out.read_text(encoding="utf-8"))
    assert page.count("tr", "alert") == 500
    assert "200 more alerts in report.alerts.jsonl (JSON lines, beside this report)." in page.all_text
    beside = [json.loads(line) for line in (out.parent / "report.alerts.jsonl").read_text().splitlines()]
    assert len(beside) == 700 and [a["@timestamp"] for a in beside] == sorted(a["@timestamp"] for a in beside)
    assert not (out.parent / "report.scanning.jsonl").exists()  # one target: nothing cut
    assert out.stat().st_size < 1_000_000


def _png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def test_report_in_headless_chromium(report):
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    with RecordingProxy() as proxy:
        dom = run_chromium(report, "--dump-dom", proxy_port=proxy.port)
        run_chromium(report, f"--screenshot={shot}", proxy_port=proxy.port)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert proxy.page_requests == []
    page = _Page(dom.stdout)
    assert page.count("script") == 0
    assert page.count("svg", "chart") == 3 and page.count("rect") > 10
    assert page.count("tr", "exposed") == 2 and page.count("tr", "victim") == 2
    assert HOSTILE in page.all_text
    assert "10.20.0.12" in page.all_text
    assert shot.exists() and shot.stat().st_size > 50_000
    assert _png_size(shot) == (1280, 2400)


def test_the_network_check_sees_a_page_that_fetches(tmp_path):
    """The recording proxy is a real check: a page with a remote image is caught."""
    page = tmp_path / "fetching.html"
    page.write_text('<!DOCTYPE html><img src="http://example.com/pixel.png">')
    with RecordingProxy() as proxy:
        run_chromium(page, "--dump-dom", proxy_port=proxy.port)
    assert [r for r in proxy.page_requests if "example.com" in r] == ["GET http://example.com/pixel.png HTTP/1.1"]


def test_each_section_cut_short_is_written_beside(tmp_path, monkeypatch):
    from rpcwatch.config import Config
    from rpcwatch.engines.duckdb import DuckDBEngine
    from rpcwatch.hunt import plan_hunt
    from rpcwatch.outputs.report import render
    from rpcwatch.sources import expand_inputs
    from rpcwatch.triage.run import run_triage

    monkeypatch.setattr(render, "LIMITS", {"alerts": 3, "incidents": 0, "scanning": 1, "exposure": 1})
    result = run_triage(list(expand_inputs([str(REPO / "examples")])), plan_hunt((), Config()), DuckDBEngine())
    beside = render.write_report(result, tmp_path / "r.html")
    assert sorted(beside) == ["alerts", "incidents", "scanning"]  # one exposed host: it fits
    records = {name: [json.loads(line) for line in path.read_text().splitlines()] for name, path in beside.items()}
    assert [i["id"] for i in records["incidents"]] == ["INC-0001"]
    assert [s["target"] for s in records["scanning"]] == ["10.20.0.0/24", "fd12:3456:789a:1::20"]
    assert len(records["alerts"]) == len(result.alerts)
    text = _Page((tmp_path / "r.html").read_text(encoding="utf-8")).all_text
    assert "1 more incidents in r.incidents.jsonl" in text and "1 more targets in r.scanning.jsonl" in text
