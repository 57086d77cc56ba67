"""Field-by-field agreement of the pcap reader with Zeek's own regression baselines.

Reads every trace of ``shared/corpus/zeek-btest/pairs.tsv`` and of Zeek's DCE/RPC tests
(``shared/corpus/zeek-zeek``), compares the reader's ``conn``/``dce_rpc`` rows with the
baselines (rows keyed by 5-tuple and order; a row only one side has disagrees in every
field) and prints, per field, how many rows agree. ``--differences`` lists every
difference. The comparison itself lives in ``tests/sources/zeek_btest.py``, which the
tests use too.

``--baseline-src DIR`` also measures another version (its ``src`` directory, e.g. from
``git archive REV src``) on the same pairs, in a process of its own, and prints both
side by side.

    python bench/zeek_agreement.py [--corpus ../shared/corpus] [--differences] [--baseline-src DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from sources.zeek_btest import agreement, baseline_pairs  # noqa: E402

Figures = dict[str, tuple[int, int]]


def baseline_figures(corpus: Path, src: Path) -> Figures:
    """The figures of the version in ``src``: this script run with that ``src`` first on the path."""
    env = {**os.environ, "PYTHONPATH": str(src.resolve())}
    result = subprocess.run([sys.executable, __file__, "--corpus", str(corpus), "--json"],
                            capture_output=True, text=True, env=env, check=True)
    return {field: (agree, compared) for field, (agree, compared) in json.loads(result.stdout).items()}


def share(figure: tuple[int, int] | None) -> str:
    if figure is None:
        return "-"
    agree, compared = figure
    return f"{agree} of {compared} ({100 * agree / compared:.1f} %)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "corpus")
    parser.add_argument("--differences", action="store_true", help="list every difference")
    parser.add_argument("--baseline-src", type=Path, help="the src directory of a version to compare with")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # for --baseline-src
    args = parser.parse_args()

    pairs = baseline_pairs(args.corpus)
    figures, differences = agreement(pairs)
    if args.json:
        print(json.dumps(figures))
        return
    before = baseline_figures(args.corpus, args.baseline_src) if args.baseline_src else {}
    kinds = sorted({pair.kind.split(":")[0] for pair in pairs})
    print(f"{len(pairs)} trace/baseline pairs ({', '.join(kinds)}); rows that agree")
    print(f"{'field':16} {'this version':>22}" + (f" {'baseline':>22}" if before else ""))
    for field, figure in figures.items():
        print(f"{field:16} {share(figure):>22}" + (f" {share(before.get(field)):>22}" if before else ""))
    print(f"{len(differences)} differences")
    if args.differences:
        for difference in differences:
            print(f"  {difference.pair}: {difference.row}: {difference.field}: "
                  f"Zeek {difference.zeek!r}, rpcwatch {difference.ours!r}")


if __name__ == "__main__":
    main()
