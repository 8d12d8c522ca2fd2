"""`python -m bjexp.assets list | verify [--checksums] | fetch NAME` — real weights, offline first.

The folder is `paths.assets_dir` (env BJEXP_ASSETS, default ~/.cache/bjexp/assets); `--dir` overrides it.
`fetch` is the only command that touches a network (huggingface_hub snapshots into a temporary folder, renamed
into place when complete, with every file's sha256 recorded); `verify` never does.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bjexp.models import assets as reg


def default_dir() -> Path:
    return Path(os.environ.get("BJEXP_ASSETS", Path.home() / ".cache" / "bjexp" / "assets"))


def cmd_list(root: Path) -> int:
    print(f"assets folder: {root}")
    for a in reg.registry().values():
        src = ", ".join(s.repo_id for s in a.sources) or ", ".join(u.url for u in a.urls) or a.fetch_hint
        print(f"\n{a.name}: {a.description}\n  folder:  {a.path(root)}\n  enables: {a.enables}\n  source:  {src}")
    return 0


def cmd_verify(root: Path, names: list[str], checksums: bool) -> int:
    """One line per asset. Exit status 1 when a named asset is missing, or a present one fails its checksum."""
    print(f"assets folder: {root}")
    failed = False
    for a in reg.registry().values():
        if names and a.name not in names:
            continue
        missing = a.missing(root)
        bad = reg.check_asset(a, root) if checksums and not missing else []
        if missing and a.optional and not names:
            print(f"absent   {a.name:<14} (optional) {a.fetch_command}")
        elif missing:
            print(f"MISSING  {a.name:<14} {a.path(root)}: {', '.join(missing)}\n"
                  f"         fill it, or when online: {a.fetch_command}")
        elif bad:
            print(f"CORRUPT  {a.name:<14} checksum differs: {', '.join(bad)}")
        else:
            print(f"ok       {a.name:<14} enables: {a.enables}")
        failed |= bool(bad) or bool(missing and names)
    return 1 if failed else 0


def fetch(name: str, root: Path) -> Path:
    """Download an asset's hub sources into <root>/<folder> (all or nothing) and record sha256 sums."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    from bjexp.io import atomic_dir

    a = reg.get(name)
    if a.urls:
        return _fetch_urls(a, root)
    if not a.sources:
        raise SystemExit(f"{name} has no download source: {a.fetch_hint}")
    dest = a.path(root)
    if not a.missing(root):
        print(f"{name}: already present at {dest}")
        return dest
    if dest.exists():
        raise SystemExit(f"{dest} exists but is incomplete (missing {', '.join(a.missing(root))}); move it away first")
    with atomic_dir(dest) as tmp:
        for s in a.sources:
            try:
                snapshot_download(s.repo_id, revision=s.revision, allow_patterns=list(s.allow_patterns), local_dir=tmp)
            except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as e:  # offline, no such repo, network down
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise SystemExit(f"{name}: could not download {s.repo_id}@{s.revision} ({first}); nothing was written. "
                                 f"Check the network (HF_HUB_OFFLINE must be unset), or fill {dest} by hand") from e
        missing = [r for r in a.required if not any((tmp / alt).is_file() for alt in r.split("|"))]
        if missing:
            raise RuntimeError(f"{name}: the download lacks {', '.join(missing)}")
        reg.write_record(tmp, [{"repo_id": s.repo_id, "revision": s.revision} for s in a.sources])
    print(f"{name}: fetched into {dest}")
    return dest


def _fetch_urls(a: reg.Asset, root: Path) -> Path:
    """Direct downloads (evaluation weights): each file to a temp name, checked against its published checksum,
    then renamed into place (torch.hub's downloader)."""
    from torch.hub import download_url_to_file

    from bjexp.eval.assets import record_sha256

    for u in a.urls:
        dst = a.path(root) / u.relpath
        if dst.is_file():
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            download_url_to_file(u.url, str(dst), hash_prefix=u.sha256_prefix or u.sha256, progress=True)
        except (OSError, RuntimeError) as e:  # offline / HTTP error (URLError is an OSError) / checksum mismatch
            raise SystemExit(f"{a.name}: could not download {u.url} ({e}); nothing was written to {dst}") from e
        record_sha256(dst)  # verified at every load (bjexp.eval.assets.require)
        print(f"{a.name}: {dst}")
    return a.path(root)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bjexp.assets", description=__doc__.splitlines()[0])
    p.add_argument("--dir", type=Path, default=None, help="assets folder (default: $BJEXP_ASSETS or ~/.cache/bjexp/assets)")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="the registered assets")
    v = sub.add_parser("verify", help="offline: which assets are present and which runs they enable; with NAMEs, "
                                      "exit 1 unless all of them are present")
    v.add_argument("names", nargs="*", help="assets that must be present (e.g. sd15 biomedclip eval)")
    v.add_argument("--checksums", action="store_true", help="also compare files against the sha256 recorded at fetch")
    f = sub.add_parser("fetch", help="download an asset (needs network)")
    f.add_argument("name")
    args = p.parse_args(argv)
    root = args.dir or default_dir()
    if args.cmd == "list":
        return cmd_list(root)
    unknown = set(args.names if args.cmd == "verify" else [args.name]) - set(reg.registry())
    if unknown:
        p.error(f"unknown asset(s) {sorted(unknown)}; see `python -m bjexp.assets list`")
    if args.cmd == "verify":
        return cmd_verify(root, args.names, args.checksums)
    fetch(args.name, root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
