"""`python -m bjexp.assets list | verify [NAMES] [--checksums] | fetch NAME | record NAME` — real weights, offline first.

The folder is `paths.assets_dir` (env BJEXP_ASSETS, default ~/.cache/bjexp/assets); `--dir` overrides it, and
`--folder` names a folder of your own (what `model.pretrained_path`, `encoder.path` or `eval.weights_dir` point
at). `fetch` is the only command that touches a network; `verify` never does.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bjexp.assets.checksums import files_in, record_checksums
from bjexp.assets.download import fetch
from bjexp.assets.local import checksum_failures, check_folder, command_for, folder_of, get, members, registry, \
    unverifiable
from bjexp.assets.spec import CLI, FetchError, MissingWeightsError, UnknownAssetError, default_assets_dir
from bjexp.assets.table import RUNS


def status(name: str, root: Path, folder: Path | None = None, checksums: bool = False) -> tuple[str, str]:
    """(state, detail): state is ok | MISSING | CORRUPT; detail says what is missing or wrong and how to fix it."""
    a = get(name)
    if a.includes:
        lacking = {n: status(n, root, None, checksums)[0] for n in a.includes}
        lacking = {n: s for n, s in lacking.items() if s != "ok"}
        state = "CORRUPT" if "CORRUPT" in lacking.values() else ("MISSING" if lacking else "ok")
        return state, (f"  needs: {', '.join(lacking)} (`{command_for('fetch', a, a.path(root))}`)" if lacking else "")
    problems = check_folder(name, folder, assets_dir=root)
    if problems:
        return "MISSING", "\n".join(p.text().split("\n", 1)[1] for p in problems)
    if checksums:
        bad = checksum_failures(name, folder, assets_dir=root)
        if bad:
            return "CORRUPT", "\n".join("  " + str(e).replace("\n", "\n  ") for e in bad)
        loose = unverifiable(name, folder, assets_dir=root)
        if loose:
            cmd = command_for("record", a, folder_of(a, root, folder))
            return "ok", f"  no checksum recorded for {', '.join(map(str, loose))}: `{cmd}`"
    return "ok", ""


def cmd_list(root: Path) -> int:
    print(f"assets folder: {root}")
    for a in registry().values():
        if a.includes:
            source = "bundle of " + ", ".join(a.includes)
        else:
            source = "; ".join([s.label for s in a.hub] + [u.url + (f" (sha256 {u.published}…)" if u.published else
                                                                   " (no published checksum: recorded at fetch)")
                                                           for u in a.urls]) or "no download (see below)"
        print(f"\n{a.name}{' (optional)' if a.optional else ''}: {a.description}\n  folder:  {a.path(root)}"
              + (f"  (config: {a.config_key})" if a.config_key else "") + f"\n  source:  {source}\n  "
              + (f"fetch:   {command_for('fetch', a, a.path(root))}" if a.downloadable else f"obtain:  {a.how_to_obtain}"))
    return 0


def cmd_verify(root: Path, names: list[str], checksums: bool, folder: Path | None) -> int:
    """One line per asset, then the runs the present assets enable. Exit 1 when a named asset is missing or
    corrupt, or (with --checksums) any present asset is corrupt."""
    print(f"assets folder: {root}")
    failed = False
    for a in registry().values():
        if names and a.name not in names:
            continue
        state, detail = status(a.name, root, folder, checksums)
        where = folder if folder is not None else ("" if a.includes else a.path(root))
        if state == "MISSING" and a.optional and not names:
            print(f"absent   {a.name:<24} (optional) {command_for('fetch', a, a.path(root))}")
            continue
        print(f"{state:<8} {a.name:<24} {where}" + (f"\n{detail}" if detail else ""))
        failed |= state == "CORRUPT" or (state == "MISSING" and bool(names))
    if folder is None:
        print("\nruns these assets enable (real world; the miniature world needs none):")
        for run in RUNS:
            lacking = [n for n in run.needs if status(n, root, None, checksums)[0] != "ok"]
            print(f"  {'yes' if not lacking else 'no ':<4} {run.overrides:<30} {run.what}"
                  + (f"  [needs {', '.join(lacking)}]" if lacking else ""))
    return 1 if failed else 0


def cmd_record(name: str, root: Path, folder: Path | None) -> int:
    """Record the sha256 of a folder filled by hand (RoentGen, or weights you copied), so loads verify them."""
    problems = check_folder(name, folder, assets_dir=root)
    if problems:
        raise MissingWeightsError(*problems)
    for a in members(name):
        path = folder_of(a, root, folder)
        files = [u.relpath for u in a.urls] if a.urls else files_in(path)
        record_checksums(path, files, "recorded by hand (`record`)")
        print(f"{a.name}: recorded the sha256 of {len(files)} file(s) in {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=CLI, description=__doc__.splitlines()[0])
    p.add_argument("--dir", type=Path, default=None, help="assets folder (default: $BJEXP_ASSETS or ~/.cache/bjexp/assets)")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="the registered assets: folders, sources, fetch commands")
    v = sub.add_parser("verify", help="offline: which assets are present and which runs they enable; with NAMEs, "
                                      "exit 1 unless all of them are present")
    v.add_argument("names", nargs="*", help="assets that must be present (e.g. sd15 biomedclip eval)")
    v.add_argument("--checksums", action="store_true", help="also compare files with the sha256 recorded at fetch "
                                                            "or published")
    for name, help_ in (("fetch", "download an asset (needs the network)"),
                        ("record", "record the checksums of a folder filled by hand")):
        c = sub.add_parser(name, help=help_)
        c.add_argument("name")
    for c in (v, sub.choices["fetch"], sub.choices["record"]):
        c.add_argument("--folder", type=Path, default=None, help="a folder of your own instead of the asset's place "
                                                                 "in the assets folder (one asset only)")
    args = p.parse_args(argv)
    root = args.dir or default_assets_dir()
    try:
        if args.cmd == "list":
            return cmd_list(root)
        names = args.names if args.cmd == "verify" else [args.name]
        for n in names:
            get(n)
        if args.folder is not None and len(names) != 1:
            p.error("--folder is for one asset: name it")
        if args.cmd == "verify":
            return cmd_verify(root, names, args.checksums, args.folder)
        if args.cmd == "record":
            return cmd_record(args.name, root, args.folder)
        fetch(args.name, root, folder=args.folder)
        return 0
    except (UnknownAssetError, FetchError) as e:
        print(f"{CLI} {args.cmd}: {e}", file=sys.stderr)
        return 2 if isinstance(e, UnknownAssetError) else 1
    except MissingWeightsError as e:
        print(e, file=sys.stderr)
        return 1
