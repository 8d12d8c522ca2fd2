"""`python -m bjexp.registration common-pairs OUT.csv MANIFEST [MANIFEST ...]`: the pair_ids every registered
manifest of a sweep keeps (the intersection rule after the fact; see bjexp/registration/subset.py)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bjexp.registration.subset import common_pair_ids, write_common_subset


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bjexp.registration")
    sub = ap.add_subparsers(dest="cmd", required=True)
    cp = sub.add_parser("common-pairs", help="write the pair_ids kept by every given manifest")
    cp.add_argument("out", type=Path, help="CSV to write (one pair_id column)")
    cp.add_argument("manifests", nargs="+", type=Path, help="registered manifests of the sweep (incl. none's)")
    a = ap.parse_args(argv)
    try:
        out = write_common_subset(a.manifests, a.out)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    print(f"{len(common_pair_ids([out]))} common pairs -> {out}")


if __name__ == "__main__":
    main()
