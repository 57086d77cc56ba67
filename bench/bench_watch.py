#!/usr/bin/env python3
"""Benchmark `rpcwatch watch`: latency from a line written to its alert at a file sink,
throughput next to `rpcwatch hunt` on the same log, and a soak with rotation.

    python3 bench/bench_watch.py [--latency 30] [--rows 1000000] [--runs 3] [--soak 600]

* latency: `rpcwatch watch` (default poll interval) follows a Zeek conn.log that grows by
  2,000 background lines/s; every 100 ms a probe line with its own uid is appended and
  the time it reaches the file sink is taken. p50 and p99 per run, medians over --runs.
* throughput: a generated log (../shared/tools/gen_zeek_conn.py, cached in bench/out/)
  read by `rpcwatch watch --once` from a fresh state and by `rpcwatch hunt --workers 0`,
  alternately, each pinned to one core (taskset -c 0), start-up included; medians of
  --runs of wall time and of CPU time (user + system: what the process itself used, which
  other load on the machine does not change).
* soak: `rpcwatch watch` for --soak seconds while the log grows (2,000 lines/s, a probe per
  second) and is rotated every --rotate seconds (rename into a dated folder, gzip,
  remove); resident memory sampled every 5 s; at the end every probe must have raised
  exactly one alert. `--soak 3600` is the one-hour soak.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from watch.processes import rpcwatch, start_watch, until_started  # noqa: E402  (shared with the tests)
from watch.zeek_writer import RPC_RULE, header, line  # noqa: E402

OUT = HERE / "out"
GENERATOR = Path(os.environ.get("RPCWATCH_SHARED", HERE.parent.parent / "shared")) / "tools" / "gen_zeek_conn.py"
BACKGROUND_PER_SECOND = 2000


class Writer:
    """Appends background lines and probes to <logs>/current/conn.log; rotates on request."""

    def __init__(self, logs: Path, probe_every: float, rotate_every: float | None = None):
        self.current = logs / "current"
        self.current.mkdir(parents=True)
        self.logs = logs
        self.probe_every, self.rotate_every = probe_every, rotate_every
        self.written: dict[str, float] = {}
        self.number = 0
        self.stop = threading.Event()
        self.rotations = 0
        self._fd = self._open()

    def _open(self) -> int:
        fd = os.open(self.current / "conn.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.write(fd, header(time.strftime("%Y-%m-%d-%H-%M-%S")))
        return fd

    def run(self) -> None:
        next_probe = next_rotation = time.monotonic()
        if self.rotate_every:
            next_rotation += self.rotate_every
        tick = 0.01
        while not self.stop.is_set():
            started = time.monotonic()
            os.write(self._fd, b"".join(line(self._next(), False) for _ in range(int(BACKGROUND_PER_SECOND * tick))))
            if started >= next_probe:
                number = self._next(probe=True)
                os.write(self._fd, line(number, True))
                self.written[f"C{number:09d}"] = time.time()
                next_probe += self.probe_every
            if self.rotate_every and started >= next_rotation:
                self._rotate()
                next_rotation += self.rotate_every
            time.sleep(max(0.0, tick - (time.monotonic() - started)))

    def _next(self, probe: bool = False) -> int:
        """Line numbers whose parity the probes own (``line`` draws a probe's source from it)."""
        self.number += 1
        return self.number * 2 + (1 if probe else 0)

    def _rotate(self) -> None:
        os.close(self._fd)
        dated = self.logs / time.strftime("%Y-%m-%d")
        dated.mkdir(exist_ok=True)
        rotated = dated / f"conn.{self.rotations:05d}.log"
        os.rename(self.current / "conn.log", rotated)
        self._fd = self._open()
        with open(rotated, "rb") as source, gzip.open(f"{rotated}.gz", "wb", compresslevel=1) as target:
            shutil.copyfileobj(source, target, 1 << 20)
        os.unlink(rotated)
        self.rotations += 1


def running_watch(logs: Path, state: Path, out: Path) -> subprocess.Popen:
    """`rpcwatch watch` at its default poll interval, once its sink is open."""
    process = start_watch(logs, state, f"file:{out}")
    until_started(process, 1)
    threading.Thread(target=process.stderr.read, daemon=True).start()  # keep draining its messages
    return process


def arrivals(out: Path, seen: dict[str, float], stop: threading.Event) -> None:
    """Time of arrival of each probe's alert at the file sink (checked every 2 ms)."""
    while not out.exists() and not stop.is_set():
        time.sleep(0.002)
    with open(out) as fh:
        pending = ""
        while not stop.is_set():
            chunk = fh.read()
            if not chunk:
                time.sleep(0.002)
                continue
            now = time.time()
            pending += chunk
            *complete, pending = pending.split("\n")
            for text in complete:
                alert = json.loads(text)
                if alert["rule"]["name"] == RPC_RULE:
                    seen.setdefault(alert["original"]["uid"], now)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def latency_run(seconds: float) -> tuple[float, float, int]:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        out = root / "alerts.jsonl"
        writer = Writer(root / "logs", probe_every=0.1)
        process = running_watch(root / "logs", root / "state", out)
        seen: dict[str, float] = {}
        stop = threading.Event()
        reader = threading.Thread(target=arrivals, args=(out, seen, stop), daemon=True)
        reader.start()
        writing = threading.Thread(target=writer.run, daemon=True)
        writing.start()
        time.sleep(seconds)
        writer.stop.set()
        writing.join()
        deadline = time.monotonic() + 15
        while len(seen) < len(writer.written) and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        process.send_signal(signal.SIGTERM)
        process.wait(30)
        delays = [seen[uid] - written for uid, written in writer.written.items() if uid in seen]
        missing = len(writer.written) - len(delays)
        if missing:
            raise SystemExit(f"{missing} probes had no alert")
        return percentile(delays, 0.5), percentile(delays, 0.99), len(delays)


def generated(rows: int) -> tuple[Path, int]:
    plain = OUT / f"conn_{rows}.tsv.log"
    if not plain.exists():
        OUT.mkdir(parents=True, exist_ok=True)
        print(f"generating {plain.name} ...", file=sys.stderr)
        subprocess.run([sys.executable, str(GENERATOR), "--rows", str(rows), "--seed", "1", "--format", "tsv",
                        "--out", str(plain)], check=True, stderr=subprocess.DEVNULL)
    return plain, json.loads(Path(f"{plain}.truth.json").read_text())["expected_matches"]


def one_core(command: list[str]) -> list[str]:
    return (["taskset", "-c", "0"] if shutil.which("taskset") else []) + command


def timed(command: list[str], alerts_file: Path) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (user + system) and the rule's alert count of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    count = sum(1 for text in alerts_file.read_text().splitlines() if json.loads(text)["rule"]["name"] == RPC_RULE)
    return elapsed, cpu, count


def throughput(rows: int, runs: int) -> dict[str, tuple[float, float]]:
    """Median wall and CPU seconds of each command, run alternately."""
    log, truth = generated(rows)
    results: dict[str, list[tuple[float, float]]] = {"watch --once": [], "hunt --workers 0": []}
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as folder:
            root = Path(folder)
            commands = {"watch --once": (["watch", str(log), "--once", "--state", str(root / "s"),
                                          "--to", f"file:{root / 'w.jsonl'}"], root / "w.jsonl"),
                        "hunt --workers 0": (["hunt", str(log), "--workers", "0", "--format", "jsonl", "-q",
                                              "-o", str(root / "h.jsonl")], root / "h.jsonl")}
            for name, (arguments, alerts_file) in commands.items():
                elapsed, cpu, count = timed(one_core(rpcwatch() + arguments), alerts_file)
                assert count == truth, (name, count, truth)
                results[name].append((elapsed, cpu))
    return {name: (statistics.median(t[0] for t in times), statistics.median(t[1] for t in times))
            for name, times in results.items()}


def rss_mib(pid: int) -> float:
    for text in Path(f"/proc/{pid}/status").read_text().splitlines():
        if text.startswith("VmRSS:"):
            return int(text.split()[1]) / 1024
    return 0.0


def soak(seconds: float, rotate: float) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        out = root / "alerts.jsonl"
        writer = Writer(root / "logs", probe_every=1.0, rotate_every=rotate)
        process = running_watch(root / "logs", root / "state", out)
        writing = threading.Thread(target=writer.run, daemon=True)
        writing.start()
        began, samples = time.monotonic(), []
        while time.monotonic() - began < seconds:
            time.sleep(5)
            samples.append((time.monotonic() - began, rss_mib(process.pid)))
        writer.stop.set()
        writing.join()
        time.sleep(2)
        process.send_signal(signal.SIGTERM)
        process.wait(60)
        uids = [json.loads(text)["original"]["uid"] for text in out.read_text().splitlines()
                if json.loads(text)["rule"]["name"] == RPC_RULE]
        warm = [rss for at, rss in samples if at >= min(rotate, seconds / 2)]
        return {"seconds": seconds, "rotations": writer.rotations, "lines": writer.number,
                "probes": len(writer.written), "alerts": len(uids), "duplicates": len(uids) - len(set(uids)),
                "missing": len(set(writer.written) - set(uids)), "rss_first": warm[0], "rss_last": warm[-1],
                "rss_max": max(rss for _, rss in samples), "slope_mib_per_hour": _slope(samples, rotate)}


def _slope(samples: list[tuple[float, float]], after: float) -> float:
    points = [(at, rss) for at, rss in samples if at >= after] or samples
    if len(points) < 2:
        return 0.0
    return statistics.linear_regression([at for at, _ in points], [rss for _, rss in points]).slope * 3600


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=float, default=30.0, help="seconds of each latency run (0: skip)")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the throughput log (0: skip)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--soak", type=float, default=600.0, help="seconds of the soak (3600: one hour; 0: skip)")
    parser.add_argument("--rotate", type=float, default=60.0, help="seconds between rotations in the soak")
    args = parser.parse_args()
    if args.latency:
        runs = [latency_run(args.latency) for _ in range(args.runs)]
        print(f"latency (line written -> alert at the file sink), {args.runs} runs of {args.latency:g} s, "
              f"{runs[0][2]} probes each, {BACKGROUND_PER_SECOND:,} lines/s background:")
        for index, (p50, p99, _) in enumerate(runs, 1):
            print(f"  run {index}: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")
        print(f"  median: p50 {statistics.median(r[0] for r in runs) * 1000:.0f} ms, "
              f"p99 {statistics.median(r[1] for r in runs) * 1000:.0f} ms")
    if args.rows:
        print(f"throughput on {args.rows:,} generated conn.log rows, one core (taskset -c 0), start-up "
              f"included, median of {args.runs}:")
        for name, (elapsed, cpu) in throughput(args.rows, args.runs).items():
            print(f"  rpcwatch {name:<18} {elapsed:6.2f} s wall ({args.rows / elapsed:,.0f} lines/s), "
                  f"{cpu:5.2f} s CPU ({args.rows / cpu:,.0f} lines per CPU second)")
    if args.soak:
        result = soak(args.soak, args.rotate)
        print(f"soak: {result['seconds']:.0f} s, {result['lines']:,} lines, {result['rotations']} rotations, "
              f"{result['probes']} probes -> {result['alerts']} alerts ({result['missing']} missing, "
              f"{result['duplicates']} duplicates)")
        print(f"  resident memory after the first rotation {result['rss_first']:.0f} MiB, at the end "
              f"{result['rss_last']:.0f} MiB, peak {result['rss_max']:.0f} MiB, "
              f"trend {result['slope_mib_per_hour']:+.1f} MiB/hour")


if __name__ == "__main__":
    main()
