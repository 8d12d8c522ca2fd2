"""The intersection rule: every ablation of a sweep is evaluated on the same pairs.

Registration methods drop different pairs (failures, low scores); comparing a method's metrics on its own survivors
against `none` on all pairs would mix registration quality with pair selection. So the evaluation subset of a
sweep is the set of pair_ids kept by *every* registered manifest of the sweep (the `none` manifest keeps all).

    python -m bjexp.registration.subset OUT.csv MANIFEST [MANIFEST ...]

writes that subset (one `pair_id` column); `restrict(df, OUT.csv)` applies it to any manifest or result table.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from bjexp.io import atomic_write


def common_pair_ids(manifests: list[str | Path]) -> list[str]:
    if not manifests:
        raise ValueError("common_pair_ids: no manifests given")
    common: set[str] | None = None
    for p in manifests:
        if not Path(p).is_file():
            raise FileNotFoundError(f"manifest not found: {p}")
        ids = set(pd.read_csv(p, usecols=["pair_id"], dtype={"pair_id": str})["pair_id"])
        common = ids if common is None else common & ids
    return sorted(common or ())


def write_common_subset(manifests: list[str | Path], out: str | Path) -> Path:
    ids = common_pair_ids(manifests)
    with atomic_write(out, "w") as f:
        pd.DataFrame({"pair_id": ids}).to_csv(f, index=False)
    return Path(out)


def restrict(df: pd.DataFrame, subset: str | Path | None) -> pd.DataFrame:
    """Rows of `df` whose pair_id is in the subset file (None = no restriction)."""
    if subset is None:
        return df
    if not Path(subset).is_file():
        raise FileNotFoundError(f"pair subset not found: {subset} (write it with python -m bjexp.registration.subset)")
    keep = set(pd.read_csv(subset, dtype={"pair_id": str})["pair_id"])
    return df[df["pair_id"].astype(str).isin(keep)].reset_index(drop=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bjexp.registration.subset", description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="CSV to write (one pair_id column)")
    ap.add_argument("manifests", nargs="+", type=Path, help="registered manifests of the sweep (incl. none's)")
    a = ap.parse_args(argv)
    p = write_common_subset(a.manifests, a.out)
    print(f"{len(common_pair_ids(a.manifests))} common pairs -> {p}")


if __name__ == "__main__":
    main()
