#!/usr/bin/env python3
"""Benchmark correlation rules on a slow sweep: one internet source probing N internal
hosts on TCP/135, one probe every 1/16 s, with as many unrelated connections between.

    python3 bench/bench_correlation.py [--hosts 20000 200000] [--runs 3] [--timeout 300]

`rpcwatch hunt` runs with the bundled rules (two correlations over the conn rule's
matches), with the bundled rules less the correlations, and with the conn rule alone. The
bundled rules also run with the correlation module of the commit this branch started from
(`git merge-base HEAD main`), loaded in place of this tree's from a copy in the benchmark's
temporary directory: before and after side by side in one run (without correlations the
two are the same code). Every command runs in its own process; wall time is the median of --runs runs, peak
memory the largest resident set seen; a run still going after --timeout seconds is stopped
and reported as such. Alerts are checked against the ground truth: N alerts of the conn
rule and one sweep alert standing for all N probes, whose value is the number of hosts in
one ten-minute window (9,601 at 16 probes per second).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections import Counter
from datetime import UTC
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = HERE / "out"
RULES = REPO / "src" / "rpcwatch" / "rules"
CONN_RULE = RULES / "zeek_conn_rpc_from_internet.yml"
#: the bundled rules less the correlations: what the correlations add is the difference
DETECTION_RULES = sorted(path for path in RULES.glob("*.yml") if not path.name.startswith("correlation_"))
SOURCE = "45.83.64.17"
START = 1_700_000_000.0
PROBES_PER_SECOND = 16  # a power of two: probe times are exact in binary and in Zeek's six decimals
SWEEP_WINDOW_SECONDS = 600
HEADER = """#separator \\x09
#set_separator\t,
#empty_field\t(empty)
#unset_field\t-
#path\tconn
#open\t2023-11-14-22-13-20
#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tservice\tduration\torig_bytes\tresp_bytes\tconn_state\tlocal_orig\tlocal_resp\tmissed_bytes\thistory\torig_pkts\torig_ip_bytes\tresp_pkts\tresp_ip_bytes\ttunnel_parents
#types\ttime\tstring\taddr\tport\taddr\tport\tenum\tstring\tinterval\tcount\tcount\tstring\tbool\tbool\tcount\tstring\tcount\tcount\tcount\tcount\tset[string]
"""

# the old module is loaded in place of the new one before rpcwatch imports it; it has no
# poll() or losses(), which the hunt asks for (nothing to report: it holds everything)
BASELINE_LAUNCHER = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("rpcwatch.sigma.correlation", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
module.Correlator.poll = lambda self, watermark=None: []
module.Correlator.losses = lambda self: []
from rpcwatch.cli import main
sys.exit(main(sys.argv[2:]))
"""


def generate(hosts: int) -> Path:
    """The sweep's probes (rejected) with one unrelated HTTPS connection after each."""
    path = OUT / f"sweep_{hosts}.conn.log"
    if path.exists():
        return path
    OUT.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as log:
        log.write(HEADER)
        for i in range(hosts):
            ts = START + i / PROBES_PER_SECOND
            victim = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
            log.write(f"{ts:.6f}\tCP{i:09d}\t{SOURCE}\t{40000 + i % 20000}\t{victim}\t135\ttcp\t-\t-\t-\t-\tREJ\t"
                      f"F\tT\t0\tSr\t1\t44\t1\t40\t-\n")
            client = f"10.200.{i >> 8 & 255}.{i & 255}"
            log.write(f"{ts + 0.01:.6f}\tCN{i:09d}\t{client}\t{50000 + i % 10000}\t93.184.216.34\t443\ttcp\tssl\t"
                      f"1.5\t600\t4200\tSF\tT\tF\t0\tShADadfF\t8\t1020\t9\t4800\t-\n")
    return path


def expected(hosts: int) -> dict:
    duration = (hosts - 1) / PROBES_PER_SECOND
    window = min(hosts, SWEEP_WINDOW_SECONDS * PROBES_PER_SECOND + 1)
    return {"Detect RPC from Internet": hosts, "sweep": (hosts, window, START, START + duration)}


# A child's peak resident set (ru_maxrss) starts from that of the process that spawned it
# (Linux carries the high-water mark across exec), and this script holds whole outputs: each
# command is spawned by a small process of its own, which reports the command's figures.
SPAWNER = """
import os, sys, time
start = time.perf_counter()
pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as report:
    report.write(f"{time.perf_counter() - start} {usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}")
"""


def measure(argv: list[str], runs: int, timeout: float) -> tuple[float | None, float, str]:
    """Median wall seconds (None: stopped at the timeout), peak RSS in MiB, the last output."""
    times, peak, output = [], 0.0, ""
    for _ in range(runs):
        with tempfile.TemporaryFile() as out, tempfile.NamedTemporaryFile("r") as figures:
            spawner = subprocess.Popen([sys.executable, "-c", SPAWNER, figures.name, *argv], stdout=out,
                                       stderr=subprocess.DEVNULL, start_new_session=True)
            try:
                spawner.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(spawner.pid, 9)
                spawner.wait()
                return None, peak, ""
            wall, rss_kib, status = figures.read().split()
            if int(status) != 0:
                raise SystemExit(f"failed: {' '.join(argv)}")
            times.append(float(wall))
            peak = max(peak, int(rss_kib) / 1024)
            out.seek(0)
            output = out.read().decode()
    return statistics.median(times), peak, output


def check(output: str, hosts: int, bundled: bool) -> str:
    alerts = [json.loads(line) for line in output.splitlines()]
    by_rule = Counter(a["rule"]["name"] for a in alerts)
    truth = expected(hosts)
    sweeps = [a["correlation"] for a in alerts if a["rule"]["name"] == "RPC Sweep from Internet"]
    found = [(s["events_count"], s["value"], s["first_seen"], s["last_seen"]) for s in sweeps]
    count, window, first, last = truth["sweep"]
    from datetime import datetime

    def iso(ts: float) -> str:
        return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    want_sweeps = [(count, window, iso(first), iso(last))] if bundled else []
    ok = by_rule["Detect RPC from Internet"] == hosts and found == want_sweeps and len(by_rule) == 1 + bundled
    if not ok:
        raise SystemExit(f"wrong alerts for {hosts} hosts: {dict(by_rule)}, sweeps {found}, want {want_sweeps}")
    return f"{hosts:,} + {len(sweeps)} sweep ({count:,} events, value {window:,})" if bundled else f"{hosts:,}"


def baseline_module(directory: Path) -> Path:
    base = subprocess.run(["git", "-C", str(REPO), "merge-base", "HEAD", "main"], check=True,
                          capture_output=True, text=True).stdout.strip()
    source = subprocess.run(["git", "-C", str(REPO), "show", f"{base}:src/rpcwatch/sigma/correlation.py"],
                            check=True, capture_output=True, text=True).stdout
    path = directory / "correlation_before.py"
    path.write_text(source)
    return path


def bytes_held_per_event(events: int = 100_000) -> tuple[float, float]:
    """In this process: memory a correlation holds per event waiting in its reorder buffer,
    and per event in a window (the sweep rule, records shaped as the conn rule's matches)."""
    import tracemalloc

    from rpcwatch.sigma.correlation import CorrelationLimits, Correlator, Event
    from rpcwatch.sigma.loader import load_rule_set

    sweep = next(c for c in load_rule_set([], bundled=True).correlations if c.type == "value_count")
    figures = []
    for limits in (CorrelationLimits(max_reorder_events=events), CorrelationLimits(max_reorder_events=1)):
        correlator = Correlator([sweep], limits)
        tracemalloc.start()
        for i in range(events):
            record = {"ts": START + i, "uid": f"CP{i:015d}", "id.orig_h": ".".join(SOURCE.split(".")),
                      "id.resp_h": f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", "conn_state": "REJ"}
            correlator.observe(sweep.rules[0], Event(START + i / 1000, sweep.rules[0], record, {}, "Detect",
                                                     "zeek.conn"))
        figures.append(tracemalloc.get_traced_memory()[0] / events)
        tracemalloc.stop()
    return figures[0], figures[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, nargs="+", default=[20_000, 200_000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    buffered, windowed = bytes_held_per_event()
    print(f"held per event and correlation: {buffered:.0f} bytes waiting in the reorder buffer, "
          f"{windowed:.0f} bytes in a window")
    with tempfile.TemporaryDirectory() as scratch:
        old = baseline_module(Path(scratch))
        header = f"{'hosts':>8} | {'rules':10} | {'code':6} | {'wall s':>9} {'RSS MiB':>8} | alerts"
        print(header)
        print("-" * len(header))
        for hosts in args.hosts:
            log = generate(hosts)
            hunt = ["hunt", str(log), "--format", "jsonl", "-q", "--no-progress"]
            configurations = (("bundled", []),
                              ("detection", [arg for path in DETECTION_RULES for arg in ("--rules", str(path))]
                               + ["--no-bundled-rules"]),
                              ("conn rule", ["--rules", str(CONN_RULE), "--no-bundled-rules"]))
            for rules, extra in configurations:
                codes = [("after", [sys.executable, "-m", "rpcwatch"])]
                if rules == "bundled":
                    codes.append(("before", [sys.executable, "-c", BASELINE_LAUNCHER, str(old)]))
                for code, prefix in codes:
                    wall, rss, output = measure(prefix + hunt + extra, args.runs, args.timeout)
                    shown = f"{wall:>9.2f} {rss:>8.0f}" if wall is not None else f">{args.timeout:>8.0f} {'-':>8}"
                    result = check(output, hosts, rules == "bundled") if wall is not None else \
                        f"stopped after {args.timeout:.0f} s"
                    print(f"{hosts:>8,} | {rules:10} | {code:6} | {shown} | {result}", flush=True)


if __name__ == "__main__":
    main()
