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
    assert page.count("details", "incident") == 4
    assert page.count("tr", "exposed") == 2  # 10.20.0.12 and the hostile log's 10.20.0.40
    text = page.all_text
    assert "INC-0001 · 167.94.138.44 · stage 7 Persistence / C2" in text
    assert "What to check" in text  # the bundled rules' guides


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
    assert page.count("tr", "exposed") == 2 and page.count("tr", "victim") >= 8
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
