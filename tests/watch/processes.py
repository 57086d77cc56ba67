"""``rpcwatch watch`` as a child process, for the process tests and bench/bench_watch.py."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


def rpcwatch() -> list[str]:
    script = shutil.which("rpcwatch", path=str(Path(sys.executable).parent)) or shutil.which("rpcwatch")
    return [script] if script else [sys.executable, "-m", "rpcwatch"]


def start_watch(logs: Path, state: Path, *sinks: str, poll: float | None = None) -> subprocess.Popen:
    arguments = [str(logs), "--state", str(state)] + (["--poll", str(poll)] if poll else [])
    for sink in sinks:
        arguments += ["--to", sink]
    return subprocess.Popen(rpcwatch() + ["watch", *arguments], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def until_started(process: subprocess.Popen, sinks: int) -> str:
    """Standard error up to the line saying the last of ``sinks`` sinks is open (start-up is done)."""
    said = ""
    while said.count("delivering to") < sinks:
        line = process.stderr.readline()
        if not line:
            raise RuntimeError(f"rpcwatch watch ended during start-up: {said}")
        said += line
    return said
