"""Coverage-guided fuzzing of every reader with atheris (libFuzzer), seeded from the corpus.

    python3 bench/fuzz_readers.py [--seconds 300] [--max-len 65536]

Each input is written to a file and read the way ``rpcwatch hunt`` reads it (format
sniffing, every reader, gzip, the line base, the prefilter of the bundled rules); the
harness fails on any exception that escapes the readers, on a read that takes longer than
a second per 64 KiB, or on more than 512 MiB of memory. The seeds are small files of every
format from ../shared/corpus (Zeek TSV/JSON, EVTX, Windows JSON, pcap/pcapng, the network
sources), cut to --max-len. Prints executions, coverage, and any crash with its input
saved under bench/out/fuzz/.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import atheris

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus"
OUT = REPO / "bench" / "out" / "fuzz"
#: suffixes of the seed files taken from the corpus, per format
SEEDS = ("conn.log", "dce_rpc.log", ".log.gz", ".evtx", ".json", ".pcap", ".pcapng", ".log")

with atheris.instrument_imports():
    from rpcwatch.context import Limits, RunContext
    from rpcwatch.hunt import plan_hunt
    from rpcwatch.sigma.loader import load_rule_set  # noqa: F401  (the plan below needs it)
    from rpcwatch.sources import LogReading, expand_inputs
    from rpcwatch.workers import WorkerPool

PLAN = plan_hunt().prefilter
WORK = Path(tempfile.mkdtemp(prefix="rpcwatch-fuzz-"))


def read_all(data: bytes) -> None:
    path = WORK / "input"
    path.write_bytes(data)
    started = time.perf_counter()
    with RunContext(limits=Limits(max_line_bytes=1 << 16), workers=WorkerPool(0)):
        for plan in (PLAN, None):
            reading = LogReading(list(expand_inputs([str(path)])), plan)
            for _ in reading.batches():
                pass
    elapsed = time.perf_counter() - started
    budget = 1.0 + len(data) / 65536
    if elapsed > budget:
        raise RuntimeError(f"read took {elapsed:.1f} s for {len(data)} bytes")


def seed_corpus(max_len: int) -> Path:
    seeds = WORK / "seeds"
    seeds.mkdir()
    taken = 0
    for path in sorted(CORPUS.rglob("*")):
        if path.is_file() and path.name.endswith(SEEDS) and path.stat().st_size <= 4 * max_len:
            (seeds / f"{taken:04d}_{path.name}").write_bytes(path.read_bytes()[:max_len])
            taken += 1
    print(f"{taken} seed files from {CORPUS}", file=sys.stderr)
    return seeds


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--seconds", type=int, default=300)
    options.add_argument("--max-len", type=int, default=65536)
    args, rest = options.parse_known_args()
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))  # a runaway is a finding, not a dead machine
    OUT.mkdir(parents=True, exist_ok=True)
    seeds = seed_corpus(args.max_len)
    argv = [sys.argv[0], str(seeds), f"-max_total_time={args.seconds}", f"-max_len={args.max_len}",
            "-rss_limit_mb=2048", f"-artifact_prefix={OUT}/", "-print_final_stats=1", "-timeout=30", *rest]
    try:
        atheris.Setup(argv, read_all)
        atheris.Fuzz()
    finally:
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("RPCWATCH_FUZZ", "1")
    main()
