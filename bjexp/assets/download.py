"""Downloads, the only code here that touches a network: hub snapshots at their pinned commit into a temporary
folder renamed into place when complete, URL files through torch.hub's downloader (temp file + rename, published
checksum checked); every file's sha256 recorded in the folder's bjexp-asset.json."""
from __future__ import annotations

import os
from pathlib import Path

from bjexp.assets.checksums import files_in, record_checksums
from bjexp.assets.local import check_folder, folder_of, get, has_entry
from bjexp.assets.spec import Asset, FetchError, default_assets_dir


def offline_reason() -> str | None:
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    return None


def _network(a: Asset, dest: Path, call, *args, **kwargs):
    """Run one download; any failure becomes a one-line FetchError (offline, DNS, HTTP, hash, disk)."""
    try:
        return call(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - whatever the transport raises, the user gets one line
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise FetchError(f"cannot fetch {a.name}: {type(e).__name__}: {first} (needs the network; "
                         f"or fill {dest} by hand)") from e


def fetch(name: str, assets_dir: str | Path | None = None, *, folder: str | Path | None = None) -> Path:
    """Download asset `name` into its folder (or `folder`); a no-op when it is already complete."""
    a = get(name)
    if a.includes:
        for n in a.includes:
            fetch(n, assets_dir)
        return Path(assets_dir or default_assets_dir())
    dest = folder_of(a, assets_dir, folder)
    if not a.downloadable:
        raise FetchError(f"{name} has no download: {a.how_to_obtain} (path: {dest})")
    if not check_folder(name, dest):
        print(f"{name}: already present at {dest}")
        return dest
    if (why := offline_reason()) is not None:
        raise FetchError(f"cannot fetch {name}: offline ({why}); run it where the network is reachable, "
                         f"or fill {dest} by hand")
    return _fetch_hub(a, dest) if a.hub else _fetch_urls(a, dest)


def _fetch_hub(a: Asset, dest: Path) -> Path:
    from huggingface_hub import snapshot_download

    from bjexp.io import atomic_dir

    if dest.exists():
        raise FetchError(f"{dest} exists but is incomplete; move it away, then `{a.fetch_command}` again")
    with atomic_dir(dest) as tmp:
        for s in a.hub:
            before = set(files_in(tmp))
            _network(a, dest, snapshot_download, s.repo_id, revision=s.revision, allow_patterns=list(s.files),
                     local_dir=tmp)
            # "a|b" entries whose first choice this commit lacks (older repos ship .bin only)
            for entry in a.required:
                if "|" in entry and not has_entry(tmp, entry):
                    _network(a, dest, snapshot_download, s.repo_id, revision=s.revision,
                             allow_patterns=entry.split("|")[1:], local_dir=tmp)
            record_checksums(tmp, set(files_in(tmp)) - before, s.label)
        problems = check_folder(a.name, tmp)
        if problems:
            lacks = "; ".join(", ".join(p.missing) or p.detail for p in problems)
            raise FetchError(f"cannot fetch {a.name}: the download lacks {lacks}")
    print(f"{a.name}: fetched into {dest}")
    return dest


def _fetch_urls(a: Asset, dest: Path) -> Path:
    from torch.hub import download_url_to_file

    for u in a.urls:
        dst = dest / u.relpath
        if dst.is_file():
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        _network(a, dest, download_url_to_file, u.url, str(dst), hash_prefix=u.published, progress=True)
        record_checksums(dest, [u.relpath], u.url)
        print(f"{a.name}: {dst}")
    return dest
