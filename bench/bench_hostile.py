"""Hostile input against time and memory: what an attacker writes into a log must not set
rpcwatch's run time or memory (docs/reliability.md).

    python3 bench/bench_hostile.py [--scale 1.0] [--runs 3] [--cases newlines,line,forty,endless,sweep]

Each case runs ``rpcwatch hunt`` in its own process and prints wall time and peak RSS
(medians of --runs), next to a baseline of the same size made of ordinary records:

* a gzip of 1 GB of newlines;
* one 4 GB line (generated on the fly through a pipe: nothing that large is written);
* a line of 40 MB among ordinary lines;
* a never-ending standard input whose records all alert, read for 60 s;
* a slow sweep: one source probing 20,000 and 200,000 internal hosts on 135 (the
  correlation's state and time), bundled rules against the conn rule alone.

--scale shrinks every size (0.1 for a quick look).
"""
from __future__ import annotations

import argparse
import gzip
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEADER = ("#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tconn\n"
          "#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tconn_state\n"
          "#types\ttime\tstring\taddr\tport\taddr\tport\tenum\tstring\n")


def row(i: int, source: str = "45.83.64.17", port: int = 80) -> str:
    return f"{1700000000 + i * 0.01:.6f}\tC{i}\t{source}\t40000\t10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}" \
           f"\t{port}\ttcp\tREJ\n"


def run(args: list[str], stdin=None, timeout: float | None = None) -> tuple[float, float, int]:
    """Wall seconds, peak RSS of the child in MiB, exit code."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "rpcwatch", "hunt", *args, "--format", "jsonl", "-q",
                                "--workers", "0"], stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if timeout is not None:
        deadline = started + timeout
        while process.poll() is None and time.perf_counter() < deadline:
            time.sleep(0.2)
        if process.poll() is None:
            process.terminate()
    _, status, usage = os.wait4(process.pid, 0)  # this child's own peak, not the largest so far
    elapsed = time.perf_counter() - started
    return elapsed, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)


def median_of(runs: int, make) -> tuple[float, float, int]:
    results = [make() for _ in range(runs)]
    return (statistics.median(r[0] for r in results), statistics.median(r[1] for r in results), results[-1][2])


def feed(generator, target, other_end) -> None:
    """Write ``generator``'s chunks into a pipe from a child process (no file on disk)."""
    pid = os.fork()
    if pid == 0:
        os.close(other_end)  # else the pipe keeps a reader after rpcwatch ends and never breaks
        try:
            with os.fdopen(target, "wb") as out:
                for chunk in generator():
                    out.write(chunk)
        except BrokenPipeError:
            pass
        os._exit(0)
    os.close(target)


def piped(generator, args: list[str], timeout: float | None = None) -> tuple[float, float, int]:
    read_end, write_end = os.pipe()
    feed(generator, write_end, read_end)
    with os.fdopen(read_end, "rb") as stdin:
        result = run(["-", *args], stdin=stdin, timeout=timeout)
    os.waitpid(-1, 0)  # the feeder
    return result


CASES = ("newlines", "line", "forty", "endless", "sweep")


def main() -> None:
    options = argparse.ArgumentParser()
    options.add_argument("--scale", type=float, default=1.0)
    options.add_argument("--runs", type=int, default=3)
    options.add_argument("--cases", default=",".join(CASES), help="which cases, comma-separated")
    args = options.parse_args()
    scale, runs, cases = args.scale, args.runs, set(args.cases.split(","))
    if cases - set(CASES):
        options.error(f"unknown cases {sorted(cases - set(CASES))} (known: {', '.join(CASES)})")
    work = Path(tempfile.mkdtemp(prefix="rpcwatch-hostile-"))
    print(f"{'case':52} {'seconds':>8} {'peak MiB':>9} {'exit':>5}", flush=True)

    def show(name: str, result: tuple[float, float, int]) -> None:
        print(f"{name:52} {result[0]:8.2f} {result[1]:9.0f} {result[2]:5d}", flush=True)

    size = int((1 << 30) * scale)
    if "newlines" in cases:
        newlines = work / "newlines.log.gz"
        with gzip.open(newlines, "wb", compresslevel=1) as out:
            out.write(HEADER.encode())
            block = b"\n" * (1 << 24)
            for _ in range(max(1, size >> 24)):
                out.write(block)
        show(f"gzip of {size >> 20} MiB of newlines", median_of(runs, lambda: run([str(newlines)])))
        ordinary = work / "ordinary.log.gz"
        with gzip.open(ordinary, "wb", compresslevel=1) as out:
            out.write(HEADER.encode())
            written, i = 0, 0
            while written < size // 8:  # rows are bigger than a newline; same compressed work
                chunk = "".join(row(i + n) for n in range(10000)).encode()
                out.write(chunk)
                written += len(chunk)
                i += 10000
        show(f"  baseline: gzip of {(size // 8) >> 20} MiB of ordinary rows",
             median_of(runs, lambda: run([str(ordinary)])))

    if "line" in cases:
        line_size = int((4 << 30) * scale)

        def one_line():
            yield HEADER.encode()
            yield row(1, port=135).encode()
            piece = b"x" * (1 << 24)
            for _ in range(max(1, line_size >> 24)):
                yield piece
            yield b"\n" + row(2, port=135).encode()

        show(f"one {line_size >> 20} MiB line on standard input", median_of(runs, lambda: piped(one_line, [])))

    if "forty" in cases:
        forty = work / "forty.log"
        with open(forty, "w") as out:
            out.write(HEADER)
            for i in range(20000):
                out.write(row(i, source=f"45.83.{i % 250}.{i % 200}", port=135))
            out.write("1.0\tChuge\t" + "x" * int(40_000_000 * scale) + "\n")
            for i in range(20000, 40000):
                out.write(row(i, source=f"45.83.{i % 250}.{i % 200}", port=135))
        show("40 MB line among 40,000 alerting rows", median_of(runs, lambda: run([str(forty)])))

    if "endless" in cases:
        seconds = max(5.0, 60 * scale)

        def endless():
            yield HEADER.encode()
            i = 0
            while True:
                yield "".join(row(i + n, source=f"45.83.{(i + n) % 250}.{(i + n) % 200}", port=135)
                              for n in range(1000)).encode()
                i += 1000

        show(f"endless alerting standard input, {seconds:.0f} s",
             median_of(1, lambda: piped(endless, [], timeout=seconds)))

    if "sweep" in cases:
        for hosts in (20_000, 200_000):
            hosts = int(hosts * scale)
            sweep = work / f"sweep{hosts}.log"
            with open(sweep, "w") as out:
                out.write(HEADER)
                for i in range(hosts):
                    out.write(row(i, port=135))
            show(f"slow sweep of {hosts:,} hosts, bundled rules",
                 median_of(runs, lambda sweep=sweep: run([str(sweep)])))
            rule = Path(__file__).resolve().parents[1] / "src/rpcwatch/rules/zeek_conn_rpc_from_internet.yml"
            show("  baseline: the conn rule alone", median_of(runs, lambda sweep=sweep, rule=rule: run(
                [str(sweep), "--no-bundled-rules", "--rules", str(rule)])))


if __name__ == "__main__":
    main()
