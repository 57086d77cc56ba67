#!/usr/bin/env python3
"""Precision and recall of triage's stages on days of an organisation's network with
planted RPC intrusions (tests/triage/synthetic_network.py), through `rpcwatch triage`.

    python3 bench/bench_triage_precision.py [--seeds 1 2 3 4 5] [--hosts 300 1000]

For every planted internet source the ground truth says the stage a correct triage
reaches (scanners 1, benign sessions 2, RPC negotiation 3, remote execution 4, full
intrusions 6 or 7) and which stages its own records show directly. A source reported in
an internet-scanning finding counts as stage 1. Per stage k: a source "reaches k" when
its stage is k or more; precision and recall over all sources and days. Over-escalation:
a source reported above its planted stage. Targets: no benign established session
over-escalated; every full intrusion at stage 6-7 with stages 3 and 4 direct.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "triage"))
from synthetic_network import generate_network_day  # noqa: E402

STAGES = range(1, 8)


def reported_stages(folder: Path) -> tuple[dict[str, dict], float]:
    """Source -> {stage, direct stages} as `rpcwatch triage` reports them, and the run's seconds."""
    start = time.perf_counter()
    output = subprocess.run([sys.executable, "-m", "rpcwatch", "triage", str(folder), "--format", "json", "-q",
                             "--no-progress"], capture_output=True, text=True, check=True).stdout
    seconds = time.perf_counter() - start
    found = json.loads(output)
    reported = {i["source"]: {"stage": i["stage"],
                              "direct": tuple(s["stage"] for s in i["stages"] if s["strength"] == "direct")}
                for i in found["incidents"]}
    for finding in found["scanning"]:
        for address in finding["source_addresses"]:
            reported.setdefault(address, {"stage": 1, "direct": (1,)})
    return reported, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--hosts", type=int, nargs="+", default=[300, 1000])
    args = parser.parse_args()
    counts = {k: Counter() for k in STAGES}
    over, under, by_kind = Counter(), Counter(), Counter()
    full_ok = full_total = benign_over = 0
    days = []
    with tempfile.TemporaryDirectory(prefix="rpcwatch-precision-") as folder:
        for hosts in args.hosts:
            for seed in args.seeds:
                day = generate_network_day(Path(folder) / f"{hosts}-{seed}", seed=seed, hosts=hosts)
                reported, seconds = reported_stages(day.folder)
                days.append((hosts, seed, day.conn_rows, seconds))
                for source, planted in day.planted.items():
                    got = reported.get(source, {"stage": 0, "direct": ()})
                    by_kind[planted.kind] += 1
                    for k in STAGES:
                        counts[k][(planted.stage >= k, got["stage"] >= k)] += 1
                    if got["stage"] > planted.stage:
                        over[planted.kind] += 1
                        benign_over += planted.kind == "benign-session"
                    elif got["stage"] < planted.stage:
                        under[planted.kind] += 1
                    if planted.kind == "full-intrusion":
                        full_total += 1
                        full_ok += got["stage"] in (6, 7) and {3, 4} <= set(got["direct"])
    for hosts, seed, rows, seconds in days:
        print(f"day: {hosts} hosts, seed {seed}: {rows:,} conn records, triage {seconds:.1f} s")
    print(f"\nsources: {sum(by_kind.values())} ({', '.join(f'{n} {k}' for k, n in sorted(by_kind.items()))})\n")
    print(f"{'stage':>5} | {'truth':>5} {'reported':>8} {'both':>5} | {'precision':>9} {'recall':>6}")
    for k in STAGES:
        truth = counts[k][(True, True)] + counts[k][(True, False)]
        said = counts[k][(True, True)] + counts[k][(False, True)]
        both = counts[k][(True, True)]
        print(f"{k:>5} | {truth:>5} {said:>8} {both:>5} | {_ratio(both, said):>9} {_ratio(both, truth):>6}")
    print(f"\nover-escalated: {sum(over.values())} ({_listing(over)}); under-escalated: {sum(under.values())} "
          f"({_listing(under)})")
    print(f"benign established sessions over-escalated: {benign_over} (target 0)")
    print(f"full intrusions at stage 6-7 with stages 3-4 direct: {full_ok} of {full_total} (target all)")
    met = benign_over == 0 and full_ok == full_total
    print(f"targets: {'met' if met else 'MISSED'}")
    sys.exit(0 if met else 1)


def _ratio(part: int, whole: int) -> str:
    return f"{part / whole:.3f}" if whole else "-"


def _listing(counts: Counter) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())) or "none"


if __name__ == "__main__":
    main()
