#!/usr/bin/env python3
"""Benchmark `rpcwatch hunt` on generated Zeek conn logs, next to a hand-written DuckDB
query doing the same filter on the same file and `grep -c` on it.

    python3 bench/bench_hunt.py [--rows 1000000 5000000] [--formats tsv json tsv.gz] [--runs 3]

Logs are generated once with ../shared/tools/gen_zeek_conn.py into bench/out/ (git-ignored).
Every command runs in its own process; wall time is the median of --runs runs, peak memory
the largest resident set (ru_maxrss) seen. rpcwatch's alert count is checked against the
generator's ground truth and against the DuckDB query's count.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
GENERATOR = Path(os.environ.get("RPCWATCH_SHARED", HERE.parent.parent / "shared")) / "tools" / "gen_zeek_conn.py"
RULE = "Detect RPC from Internet"

# The same filter as the bundled rule, written by hand for DuckDB (no inet extension offline:
# IPv4 ranges by integer arithmetic, IPv6 ranges by their textual prefixes).
DUCKDB_MACROS = r"""
SET enable_progress_bar = false;
CREATE MACRO v4(ip) AS CASE WHEN regexp_full_match(ip, '\d+\.\d+\.\d+\.\d+') THEN
  (split_part(ip, '.', 1)::BIGINT << 24) + (split_part(ip, '.', 2)::BIGINT << 16)
  + (split_part(ip, '.', 3)::BIGINT << 8) + split_part(ip, '.', 4)::BIGINT END;
CREATE MACRO in4(ip, net, bits) AS coalesce(v4(ip) >> (32 - bits) = v4(net) >> (32 - bits), false);
CREATE MACRO internal(ip) AS in4(ip, '10.0.0.0', 8) OR in4(ip, '172.16.0.0', 12)
  OR in4(ip, '192.168.0.0', 16) OR regexp_matches(lower(ip), '^f[cd][0-9a-f]{0,2}:');
CREATE MACRO non_routable(ip) AS internal(ip) OR in4(ip, '127.0.0.0', 8) OR in4(ip, '169.254.0.0', 16)
  OR in4(ip, '192.0.0.0', 24) OR in4(ip, '192.0.2.0', 24) OR in4(ip, '192.31.196.0', 24)
  OR in4(ip, '192.52.193.0', 24) OR in4(ip, '192.88.99.0', 24) OR in4(ip, '224.0.0.0', 4)
  OR in4(ip, '100.64.0.0', 10) OR in4(ip, '192.175.48.0', 24) OR in4(ip, '198.18.0.0', 15)
  OR in4(ip, '198.51.100.0', 24) OR in4(ip, '203.0.113.0', 24) OR in4(ip, '240.0.0.0', 4)
  OR in4(ip, '0.0.0.0', 8) OR lower(ip) IN ('::1', '::')
  OR regexp_matches(lower(ip), '^(fe[89ab][0-9a-f]?:|fe[c-f][0-9a-f]?:|ff[0-9a-f]{0,2}:|2001:0?db8:|100::)');
"""
DUCKDB_FILTER = """
SELECT count(*) FROM (SELECT * FROM {source} WHERE proto = 'tcp' AND "id.resp_p" = 135)
WHERE (internal("id.resp_h") OR local_resp)
  AND NOT (internal("id.orig_h") OR coalesce(local_orig, false) OR non_routable("id.orig_h"))
"""
FIELDS = ["ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto", "service",
          "duration", "orig_bytes", "resp_bytes", "conn_state", "local_orig", "local_resp",
          "missed_bytes", "history", "orig_pkts", "orig_ip_bytes", "resp_pkts", "resp_ip_bytes",
          "tunnel_parents"]
TYPES = {"id.orig_p": "INTEGER", "id.resp_p": "INTEGER", "local_orig": "BOOLEAN", "local_resp": "BOOLEAN"}


def generate(rows: int, fmt: str, seed: int = 1) -> tuple[Path, dict]:
    base = "json" if fmt.startswith("json") else "tsv"
    plain = OUT / (f"conn_{rows}.{base}.log" if seed == 1 else f"conn_{rows}_seed{seed}.{base}.log")
    if not plain.exists():
        OUT.mkdir(parents=True, exist_ok=True)
        print(f"generating {plain.name} ...", file=sys.stderr)
        subprocess.run([sys.executable, str(GENERATOR), "--rows", str(rows), "--seed", str(seed),
                        "--format", base, "--out", str(plain)], check=True, stderr=subprocess.DEVNULL)
    truth = json.loads(Path(f"{plain}.truth.json").read_text())
    if not fmt.endswith(".gz"):
        return plain, truth
    packed = plain.with_name(plain.name + ".gz")
    if not packed.exists():
        with open(plain, "rb") as src, gzip.open(packed, "wb", compresslevel=6) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    return packed, truth


def measure(command: list[str], runs: int) -> tuple[float, float, str]:
    """Median wall seconds, peak RSS in MiB, and the last run's standard output."""
    times, peak, output = [], 0.0, ""
    for _ in range(runs):
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        stdout = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
        times.append(time.perf_counter() - start)
        if os.waitstatus_to_exitcode(status) not in (0, 1):  # grep -c exits 1 when it finds nothing
            raise SystemExit(f"failed: {' '.join(command)}")
        peak = max(peak, usage.ru_maxrss / 1024)
        output = stdout.decode()
    return statistics.median(times), peak, output


def duckdb_command(path: Path, fmt: str) -> list[str]:
    if fmt.startswith("json"):
        columns = {f: TYPES.get(f, "VARCHAR") for f in FIELDS}
        source = f"read_json('{path}', format='newline_delimited', columns={columns})"
    else:
        columns = {f: TYPES.get(f, "VARCHAR") for f in FIELDS}
        source = (f"read_csv('{path}', delim='\\t', header=false, comment='#', nullstr='-', quote='', "
                  f"escape='', auto_detect=false, columns={columns})")
    script = ("import duckdb, sys; c = duckdb.connect(); c.execute(sys.argv[1]); "
              "print(c.execute(sys.argv[2]).fetchone()[0])")
    sql = DUCKDB_FILTER.format(source=source)
    # booleans in TSV are T/F: DuckDB reads them as booleans with the BOOLEAN column type
    return [sys.executable, "-c", script, DUCKDB_MACROS, sql]


def grep_command(path: Path, fmt: str) -> list[str]:
    needle = '"id.resp_p":135,' if fmt.startswith("json") else "\t135\t"
    if fmt.endswith(".gz"):
        return ["bash", "-c", 'zcat "$1" | grep -cF -- "$2"', "zcat-grep", str(path), needle]
    return ["grep", "-cF", "--", needle, str(path)]


def rpcwatch_command(path: Path, prefilter: bool) -> list[str]:
    command = [sys.executable, "-m", "rpcwatch", "hunt", str(path), "--format", "jsonl", "-q", "--no-progress"]
    return command + ([] if prefilter else ["--no-prefilter"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--formats", nargs="+", default=["tsv", "json", "tsv.gz"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-full-parse", action="store_true", help="skip the --no-prefilter runs")
    args = parser.parse_args()

    header = (f"{'rows':>9} {'format':7} {'size MB':>8} | {'rpcwatch s':>10} {'rows/s':>11} {'RSS MiB':>8} | "
              f"{'no-prefilter s':>14} {'RSS MiB':>8} | {'duckdb s':>8} {'RSS MiB':>8} | {'grep -c s':>9} | "
              f"{'vs duckdb':>9} {'vs grep':>8} | alerts")
    print(header)
    print("-" * len(header))
    for rows in args.rows:
        for fmt in args.formats:
            path, truth = generate(rows, fmt)
            size = path.stat().st_size / 1e6
            ours, our_rss, output = measure(rpcwatch_command(path, True), args.runs)
            alerts = sum(1 for line in output.splitlines() if json.loads(line)["rule"]["name"] == RULE)
            full, full_rss = (float("nan"), float("nan")) if args.no_full_parse else \
                measure(rpcwatch_command(path, False), args.runs)[:2]
            duck, duck_rss, duck_out = measure(duckdb_command(path, fmt), args.runs)
            grep, _, _ = measure(grep_command(path, fmt), args.runs)
            check = "ok" if alerts == truth["expected_matches"] == int(duck_out) else \
                f"MISMATCH truth={truth['expected_matches']} duckdb={duck_out.strip()}"
            print(f"{rows:>9} {fmt:7} {size:>8.0f} | {ours:>10.2f} {rows / ours:>11,.0f} {our_rss:>8.0f} | "
                  f"{full:>14.2f} {full_rss:>8.0f} | {duck:>8.2f} {duck_rss:>8.0f} | {grep:>9.2f} | "
                  f"{ours / duck:>8.2f}x {ours / grep:>7.2f}x | {alerts} {check}", flush=True)


if __name__ == "__main__":
    main()
