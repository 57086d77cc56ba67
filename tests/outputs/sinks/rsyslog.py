"""Debian's rsyslog as the receiving end of the syslog sink: started on a loopback port
with TCP or TLS (the ``ossl`` network stream driver, certificates from trustme), writing
what it received, as it parsed it, to JSON lines."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
MODULE_DIRS = ("/usr/lib/x86_64-linux-gnu/rsyslog", "/usr/lib/aarch64-linux-gnu/rsyslog", "/usr/lib/rsyslog")


def _require(what: str, present: bool) -> None:
    if present:
        return
    message = f"{what} is not installed (.ci/install-rsyslog installs it)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def _has_module(name: str) -> bool:
    return any(Path(folder, f"{name}.so").exists() for folder in MODULE_DIRS)


CONFIG = """
global(workDirectory="{work}" parser.escapeControlCharactersOnReceive="off" {tls_files})
module(load="imtcp" {tls_driver})
module(load="mmpstrucdata")
template(name="received" type="list" option.jsonf="on") {{
    property(outname="pri" name="pri" format="jsonf")
    property(outname="timestamp" name="timereported" dateFormat="rfc3339" format="jsonf")
    property(outname="hostname" name="hostname" format="jsonf")
    property(outname="app" name="app-name" format="jsonf")
    property(outname="procid" name="procid" format="jsonf")
    property(outname="msgid" name="msgid" format="jsonf")
    property(outname="msg" name="msg" format="jsonf")
}}
template(name="sd" type="string" string="%$!%\\n")
ruleset(name="in") {{
    action(type="mmpstrucdata")
    action(type="omfile" file="{out}" template="received")
    action(type="omfile" file="{sd}" template="sd")
}}
input(type="imtcp" port="{port}" ruleset="in")
"""


class Rsyslog:
    def __init__(self, folder: Path, tls_files: dict | None, port: int | None = None):
        _require("rsyslogd", Path(RSYSLOGD).exists())
        if tls_files:
            _require("rsyslog's OpenSSL driver (Debian package rsyslog-openssl)", _has_module("lmnsd_ossl"))
        self.folder = folder
        self.received_file, self.sd_file = folder / "received.jsonl", folder / "sd.jsonl"
        self.port = port or _free_port()
        tls = tls_files or {}
        config = CONFIG.format(
            work=folder, out=self.received_file, sd=self.sd_file, port=self.port,
            tls_files=" ".join(f'DefaultNetstreamDriver{key}File="{path}"' for key, path in tls.items()),
            tls_driver='StreamDriver.Name="ossl" StreamDriver.Mode="1" StreamDriver.AuthMode="anon"' if tls else "")
        (folder / "rsyslog.conf").write_text(config)
        self.process = subprocess.Popen([RSYSLOGD, "-n", "-f", str(folder / "rsyslog.conf"),
                                         "-i", str(folder / "rsyslog.pid")],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self._await_port()

    def _await_port(self) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"rsyslogd exited: {self.process.stdout.read().decode(errors='replace')}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("rsyslogd did not listen in time")

    def received(self, count: int) -> tuple[list[dict], list[dict]]:
        """The first ``count`` messages as rsyslog parsed them, and their structured data."""
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            lines = self._lines(self.received_file)
            if len(lines) >= count and len(self._lines(self.sd_file)) >= count:
                return ([json.loads(line) for line in lines],
                        [json.loads(line) if line.strip() else {} for line in self._lines(self.sd_file)])
            time.sleep(0.05)
        raise AssertionError(f"rsyslog received {len(self._lines(self.received_file))} of {count} messages")

    @staticmethod
    def _lines(path: Path) -> list[str]:
        return path.read_text().splitlines() if path.exists() else []

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
