"""sha256 of weight files: recorded at fetch in `<folder>/bjexp-asset.json`, verified before loading.

A folder may hold several assets' files (the xrv folder holds every xrv weight): records are merged per file.
"""
from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Iterable

from bjexp.assets.spec import RECORD


@lru_cache(maxsize=256)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256(path: str | Path) -> str:
    """Full sha256 of a file, memoised per (path, size, mtime): a process hashes each weight file once."""
    st = Path(path).stat()
    return _sha256_cached(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def read_record(folder: str | Path) -> dict:
    """{"sha256": {relpath: hex}, "sources": {relpath: source}} ({} parts when the folder has no record)."""
    path = Path(folder) / RECORD
    rec = json.loads(path.read_text()) if path.is_file() else {}
    sources = rec.get("sources", {})
    if isinstance(sources, list):  # records written before per-file sources: one list for the folder
        sources = {f: ", ".join(str(s) for s in sources) for f in rec.get("sha256", {})}
    return {"sha256": dict(rec.get("sha256", {})), "sources": dict(sources)}


def record_checksums(folder: str | Path, relpaths: Iterable[str], source: str) -> dict:
    """Hash `relpaths` (inside `folder`) and merge them into the folder's record; returns the record."""
    from bjexp.io import write_json

    folder = Path(folder)
    rec = read_record(folder)
    for rel in sorted(relpaths):
        rec["sha256"][rel] = sha256(folder / rel)
        rec["sources"][rel] = source
    write_json(folder / RECORD, rec)
    return rec


def files_in(folder: str | Path) -> list[str]:
    """Every file of a fetched folder (relative), without the record and huggingface_hub's `.cache`."""
    folder = Path(folder)
    return [str(p.relative_to(folder)) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != RECORD and ".cache" not in p.relative_to(folder).parts]
