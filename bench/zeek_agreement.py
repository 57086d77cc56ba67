"""Field-by-field agreement of the pcap reader with Zeek's own regression baselines.

Reads every trace of ``shared/corpus/zeek-btest/pairs.tsv`` and of Zeek's DCE/RPC tests
(``shared/corpus/zeek-zeek``), compares the reader's ``conn``/``dce_rpc`` rows with the
baselines (rows keyed by 5-tuple and order; a row only one side has disagrees in every
field) and prints, per field, how many rows agree. ``--differences`` lists every
difference. The comparison itself lives in ``tests/sources/zeek_btest.py``, which the
tests use too.

    python bench/zeek_agreement.py [--corpus ../shared/corpus] [--differences]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from sources.zeek_btest import agreement, baseline_pairs  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "corpus")
    parser.add_argument("--differences", action="store_true", help="list every difference")
    args = parser.parse_args()

    pairs = baseline_pairs(args.corpus)
    figures, differences = agreement(pairs)
    kinds = sorted({pair.kind.split(":")[0] for pair in pairs})
    print(f"{len(pairs)} trace/baseline pairs ({', '.join(kinds)})")
    print(f"{'field':16} {'agree':>7} {'of':>5} {'share':>8}")
    for field, (agree, compared) in figures.items():
        print(f"{field:16} {agree:7} {compared:5} {100 * agree / compared:7.1f}%")
    print(f"{len(differences)} differences")
    if args.differences:
        for difference in differences:
            print(f"  {difference.pair}: {difference.row}: {difference.field}: "
                  f"Zeek {difference.zeek!r}, rpcwatch {difference.ours!r}")


if __name__ == "__main__":
    main()
