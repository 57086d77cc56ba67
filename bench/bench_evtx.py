"""EVTX throughput: EvtxReader (what the CLI runs) next to the evtx parser alone.

The input is the corpus EVTX files, repeated in a list of paths until it holds at least
--events records (no new EVTX file is written). Each measurement runs in its own child
process, so every peak RSS figure is that measurement's own; times are medians of
--runs runs.

    python bench/bench_evtx.py [--events 1000000] [--runs 3] [--mix large|all] [--baseline REVISION]

``large`` repeats the corpus files with at least 50 records (6 files, 1,200 records:
DE_RDP_Tunnel, DE_sysmon-3-rdp-tun, dicovery_4661 and the three evtx-rs samples, whose
corrupt chunks both sides skip); ``all`` repeats every corpus EVTX (1-358 records each,
mostly 1-record Sigma samples), which measures per-file cost rather than throughput.
The last rows run the reader with the literal prefilter a rule on port 135 gets, and with
the prefilter of the bundled rules (what `rpcwatch hunt` gives the reader); with --baseline,
that row again with rpcwatch as of an earlier revision, in the same rounds.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import evtx

REPO = Path(__file__).resolve().parent.parent
CORPUS = Path(os.environ.get("RPCWATCH_CORPUS", REPO.parent / "shared" / "corpus"))
GROUPS = ("evtx-attack-samples", "hayabusa-sample-evtx", "evtx-rs-samples", "sigmahq-sigma/regression_data")
LARGE = 50


def parser_count(path: Path) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return sum(1 for _ in evtx.PyEvtxParser(str(path), skip_errors=True).records_json())


def input_list(mix: str, events: int) -> tuple[list[str], int]:
    counts = {path: parser_count(path) for group in GROUPS for path in sorted((CORPUS / group).rglob("*.evtx"))}
    chosen = {path: n for path, n in counts.items() if mix == "all" or n >= LARGE}
    per_round = sum(chosen.values())
    rounds = -(-events // per_round)
    return [str(path) for _ in range(rounds) for path in chosen], rounds * per_round


# --- what each child process measures ------------------------------------------------

def run_parser(paths: list[str], method: str, threads: int) -> int:
    records = 0
    for path in paths:
        for _ in getattr(evtx.PyEvtxParser(path, number_of_threads=threads, skip_errors=True), method)():
            records += 1
    return records


def prefilter_plan(kind: str | None):
    """No prefilter, the one a rule on port 135 gets, or the bundled rules' (every literal
    they demand of the windows table)."""
    from rpcwatch.sources.prefilter import Literal, PrefilterPlan

    if kind == "bundled":
        from rpcwatch.hunt import plan_hunt

        return plan_hunt().prefilter
    return PrefilterPlan({"windows": frozenset({Literal("135", "number")})}) if kind == "port" else None


def run_reader(paths: list[str], plan) -> int:
    from rpcwatch.sources import LogReading, expand_inputs

    reading = LogReading(list(expand_inputs(paths)), prefilter=plan)
    rows = sum(batch.data.num_rows for batch in reading.batches())
    assert plan or rows == sum(stats.records for stats in reading.stats)
    return sum(stats.records for stats in reading.stats)


def child(spec: dict) -> None:
    import rpcwatch.sources  # noqa: F401  (imports are not part of the measurement)

    paths = spec["paths"]
    plan = prefilter_plan(spec.get("prefilter"))  # loading rules is not part of it either
    started = time.perf_counter()
    if spec["what"] == "reader":
        records = run_reader(paths, plan)
    else:
        records = run_parser(paths, spec["method"], spec["threads"])
    seconds = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"records": records, "seconds": seconds, "peak_mib": peak_kib / 1024}))


def measure(specs: list[dict], runs: int) -> list[dict]:
    """Each spec ``runs`` times, in rounds (every spec once per round: load that comes and
    goes on a shared machine falls on all alike)."""
    results: list[list[dict]] = [[] for _ in specs]
    for _ in range(runs):
        for spec, found in zip(specs, results):
            env = {**os.environ, "PYTHONPATH": spec["source"]} if spec.get("source") else None
            done = subprocess.run([sys.executable, __file__, "--child"], input=json.dumps(spec), text=True,
                                  capture_output=True, check=True, env=env)
            found.append(json.loads(done.stdout))
    return [{"records": found[0]["records"], "seconds": statistics.median(r["seconds"] for r in found),
             "peak_mib": max(r["peak_mib"] for r in found)} for found in results]


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    options.add_argument("--events", type=int, default=1_000_000)
    options.add_argument("--runs", type=int, default=3)
    options.add_argument("--mix", choices=("large", "all"), default="large")
    options.add_argument("--baseline", metavar="REVISION", help="also the bundled-prefilter row as of this revision")
    options.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = options.parse_args()
    if args.child:
        child(json.load(sys.stdin))
        return
    from rpcwatch.sources.evtx import PARSER_THREADS

    paths, events = input_list(args.mix, args.events)
    print(f"{events:,} events in {len(paths):,} file reads ({args.mix} mix), median of {args.runs} runs, "
          f"{os.cpu_count()} CPUs")
    rows = [
        ("parser alone: records_json(), 1 thread", {"what": "parser", "method": "records_json", "threads": 1}),
        ("parser alone: records_json(), threads=0 (auto)", {"what": "parser", "method": "records_json", "threads": 0}),
        ("parser alone: records() (XML), 1 thread", {"what": "parser", "method": "records", "threads": 1}),
        (f"EvtxReader via LogReading ({PARSER_THREADS} thread)", {"what": "reader", "prefilter": None}),
        ("EvtxReader, prefilter for port 135", {"what": "reader", "prefilter": "port"}),
        ("EvtxReader, the bundled rules' prefilter", {"what": "reader", "prefilter": "bundled"}),
    ]
    if args.baseline:
        from common import baseline_source

        rows.append((f"  the same, before ({args.baseline})",
                     {"what": "reader", "prefilter": "bundled", "source": str(baseline_source(args.baseline))}))
    baseline = None
    print(f"{'':50} {'seconds':>8} {'events/s':>11} {'x parser':>9} {'peak RSS':>9}")
    for (label, _), result in zip(rows, measure([spec | {"paths": paths} for _, spec in rows], args.runs)):
        assert result["records"] == events, (label, result["records"], events)
        baseline = baseline or result["seconds"]
        print(f"{label:50} {result['seconds']:8.2f} {events / result['seconds']:11,.0f} "
              f"{result['seconds'] / baseline:9.2f} {result['peak_mib']:7.0f} MiB")


if __name__ == "__main__":
    main()
