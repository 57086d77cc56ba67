"""What the benchmarks share: commands measured side by side, each in its own process, and
rpcwatch as it was at an earlier revision for before/after figures.

Machines running these benchmarks are often shared, so every figure that is compared is
measured in rounds: each round runs every command once, in turn, and a command's figure is
the median of its rounds. Load that comes and goes then falls on all commands alike.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = HERE / "out"


@dataclass
class Command:
    argv: list[str]
    #: environment variables set for this command only
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Result:
    #: median wall seconds, every round's seconds, largest peak resident set in MiB, median
    #: CPU seconds (user and system, the process and its children: steadier on a busy machine)
    seconds: float
    rounds: list[float]
    peak_mib: float
    cpu: float
    #: the last round's standard output
    output: str


def measure_rounds(commands: dict[str, Command], runs: int) -> dict[str, Result]:
    """Every command ``runs`` times, one after the other within each round. Each round starts
    one command further (measured: the first command of a round ran up to a third slower
    than the same command in second place on a busy machine)."""
    times: dict[str, list[float]] = {name: [] for name in commands}
    cpu: dict[str, list[float]] = {name: [] for name in commands}
    peaks = dict.fromkeys(commands, 0.0)
    outputs = dict.fromkeys(commands, "")
    names = list(commands)
    for round_number in range(runs):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            seconds, peak, output, used = run_once(commands[name])
            times[name].append(seconds)
            cpu[name].append(used)
            peaks[name] = max(peaks[name], peak)
            outputs[name] = output
    return {name: Result(statistics.median(times[name]), times[name], peaks[name], statistics.median(cpu[name]),
                         outputs[name]) for name in commands}


def run_once(command: Command) -> tuple[float, float, str, float]:
    """Wall seconds, peak RSS in MiB (of the process, or of its largest waited-for child),
    output and CPU seconds. A process's own workers are its children: wait4 counts their
    CPU once they are waited for."""
    env = {**os.environ, **command.env}
    start = time.perf_counter()
    process = subprocess.Popen(command.argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    stdout = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) not in (0, 1):  # grep -c exits 1 when it finds nothing
        raise SystemExit(f"failed: {' '.join(command.argv)}")
    return seconds, usage.ru_maxrss / 1024, stdout.decode(), usage.ru_utime + usage.ru_stime


def rpcwatch(args: list[str], source: Path | None = None) -> Command:
    """``rpcwatch`` as a module of this interpreter; ``source``: another tree's ``src``."""
    return Command([sys.executable, "-m", "rpcwatch", *args], {"PYTHONPATH": str(source)} if source else {})


def compiled(source: Path) -> Path:
    """Byte-compile a source tree, as installing a package does: with
    PYTHONDONTWRITEBYTECODE set, every run would otherwise compile rpcwatch's modules again
    (a fifth of a one-second hunt)."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(source)], check=True)
    return source


def baseline_source(revision: str) -> Path:
    """rpcwatch's ``src`` as of ``revision`` (``git archive`` into bench/out), compiled."""
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", revision], check=True,
                            capture_output=True, text=True).stdout.strip()
    target = OUT / f"rpcwatch-{commit}"
    if not (target / "src").exists():
        target.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(REPO), "archive", commit, "src"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return compiled(target / "src")
