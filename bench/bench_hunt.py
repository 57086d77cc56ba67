#!/usr/bin/env python3
"""Benchmark `rpcwatch hunt` on generated Zeek conn logs, next to a hand-written DuckDB
query doing the same filter on the same file and `grep -c 135` on it.

    python3 bench/bench_hunt.py [--rows 1000000 5000000] [--formats tsv json tsv.gz] [--runs 3]
                                [--baseline REVISION] [--full-parse]

Logs are generated once with ../shared/tools/gen_zeek_conn.py into bench/out/ (git-ignored).
Every command runs in its own process, start-up included, in rounds (bench/common.py): wall
time is the median of --runs rounds, peak memory the largest resident set (ru_maxrss) seen.
rpcwatch runs with the default worker policy and with ``--workers 0`` (in-process), and with
--baseline as of an earlier revision, side by side. rpcwatch's alert count is checked
against the generator's ground truth and against the DuckDB query's count.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from common import HERE, OUT, REPO, Command, baseline_source, compiled, measure_rounds, rpcwatch

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


def duckdb_command(path: Path, fmt: str) -> Command:
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
    return Command([sys.executable, "-c", script, DUCKDB_MACROS, sql])


def grep_command(path: Path, fmt: str) -> Command:
    if fmt.endswith(".gz"):
        return Command(["bash", "-c", 'zcat "$1" | grep -c 135', "zcat-grep", str(path)])
    return Command(["grep", "-c", "135", str(path)])


def hunt_args(path: Path, *extra: str) -> list[str]:
    return ["hunt", str(path), "--format", "jsonl", "-q", "--no-progress", *extra]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--formats", nargs="+", default=["tsv", "json", "tsv.gz"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline", metavar="REVISION", help="also run rpcwatch as of this git revision")
    parser.add_argument("--full-parse", action="store_true", help="also run with --no-prefilter")
    args = parser.parse_args()
    compiled(REPO / "src")
    before = baseline_source(args.baseline) if args.baseline else None

    print(f"{'rows':>9} {'format':7} {'MB':>5} | command          {'s':>6} {'CPU s':>6} {'RSS MiB':>8} "
          f"{'vs duckdb':>9} {'vs grep':>8} | alerts")
    for rows in args.rows:
        for fmt in args.formats:
            path, truth = generate(rows, fmt)
            size = path.stat().st_size / 1e6
            commands = {"rpcwatch": rpcwatch(hunt_args(path)),
                        "--workers 0": rpcwatch(hunt_args(path, "--workers", "0"))}
            if before is not None:
                commands[f"before ({args.baseline})"] = rpcwatch(hunt_args(path), before)
            if args.full_parse:
                commands["--no-prefilter"] = rpcwatch(hunt_args(path, "--no-prefilter"))
            commands["duckdb query"] = duckdb_command(path, fmt)
            commands["grep -c 135"] = grep_command(path, fmt)
            results = measure_rounds(commands, args.runs)
            duck, grep = results["duckdb query"].seconds, results["grep -c 135"].seconds
            for name, result in results.items():
                check = ""
                if name.startswith(("rpcwatch", "--", "before")):
                    alerts = sum(1 for line in result.output.splitlines() if json.loads(line)["rule"]["name"] == RULE)
                    check = f"{alerts} " + ("ok" if alerts == truth["expected_matches"] else
                                            f"MISMATCH truth={truth['expected_matches']}")
                elif name == "duckdb query":
                    check = result.output.strip() + (" ok" if int(result.output) == truth["expected_matches"]
                                                     else " MISMATCH")
                print(f"{rows:>9} {fmt:7} {size:>5.0f} | {name:16} {result.seconds:>6.2f} {result.cpu:>6.2f} "
                      f"{result.peak_mib:>8.0f} "
                      f"{result.seconds / duck:>8.2f}x {result.seconds / grep:>7.2f}x | {check}  "
                      f"[{' '.join(f'{t:.2f}' for t in result.rounds)}]", flush=True)
            print(flush=True)


if __name__ == "__main__":
    main()
