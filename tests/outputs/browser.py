"""Headless Chromium for report tests: the DOM after load, a screenshot, and every network
connection the browser attempts (sent to a recording proxy on the loopback address)."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
#: the browser's own services (network time, component updates, sign-in), which headless
#: Chromium contacts whatever the page holds, even with background networking disabled;
#: their requests reach the recording proxy and go no further
BROWSER_SERVICES = frozenset({"clients2.google.com", "update.googleapis.com", "accounts.google.com",
                              "redirector.gvt1.com"})


def chromium_binary() -> str:
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    message = "headless Chromium not installed (run .ci/install-chromium)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class RecordingProxy:
    """Accepts connections on 127.0.0.1 and records the first line of each (the request)."""

    requests: list[str] = field(default_factory=list)

    def __enter__(self) -> RecordingProxy:
        self._server = socket.socket()
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(16)
        self._server.settimeout(0.2)
        self.port = self._server.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                continue
            with client:
                client.settimeout(1)
                try:
                    self.requests.append(client.recv(4096).split(b"\r\n", 1)[0].decode("latin-1"))
                except OSError:
                    self.requests.append("(connection without a request)")

    @property
    def page_requests(self) -> list[str]:
        """The requests that did not come from the browser's own services."""
        return [r for r in self.requests if _host(r) not in BROWSER_SERVICES]

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._server.close()


def run_chromium(page: Path, *mode: str, proxy_port: int, timeout: int = 90) -> subprocess.CompletedProcess:
    """One headless run on ``page`` (``--dump-dom`` or ``--screenshot=...``), with all
    traffic sent to the recording proxy and no name resolution."""
    with tempfile.TemporaryDirectory(prefix="rpcwatch-chromium-") as profile:
        command = [chromium_binary(), "--headless", "--no-sandbox", "--disable-gpu",
                   "--disable-background-networking", "--disable-component-update", "--disable-sync",
                   "--disable-default-apps", "--disable-extensions", "--no-first-run",
                   "--metrics-recording-only", "--disable-domain-reliability", f"--user-data-dir={profile}",
                   f"--proxy-server=http://127.0.0.1:{proxy_port}", "--proxy-bypass-list=<-loopback>",
                   "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--window-size=1280,2400",
                   *mode, page.resolve().as_uri()]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def _host(request_line: str) -> str:
    """``GET http://host/path HTTP/1.1`` or ``CONNECT host:443 HTTP/1.1`` -> host."""
    parts = request_line.split()
    target = parts[1] if len(parts) > 1 else ""
    return target.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0]
