"""Local checks, never the network: is a folder complete (`check_folder`), are its files the fetched ones
(`checksum_failures`), and `require`, which every loader calls before it reads a weight file."""
from __future__ import annotations

import json
import logging
import os
from functools import lru_cache
from pathlib import Path
from typing import Sequence

from bjexp.assets.checksums import read_record, sha256
from bjexp.assets.spec import CLI, RECORD, Asset, ChecksumError, MissingWeightsError, Problem, UnknownAssetError, \
    default_assets_dir
from bjexp.assets.table import ASSETS

log = logging.getLogger(__name__)


def registry() -> dict[str, Asset]:
    return ASSETS


def get(name: str) -> Asset:
    if name not in ASSETS:
        raise UnknownAssetError(f"unknown asset {name!r}; known: {', '.join(ASSETS)} (`{CLI} list`)")
    return ASSETS[name]


def members(name: str) -> list[Asset]:
    """The asset itself, or a bundle's assets."""
    a = get(name)
    return [get(n) for n in a.includes] if a.includes else [a]


def folder_of(a: Asset, assets_dir: str | Path | None, folder: str | Path | None) -> Path:
    if folder is not None:
        if a.includes:
            raise ValueError(f"{a.name} is a bundle of {', '.join(a.includes)}: check those folders one by one")
        return Path(os.path.expanduser(str(folder)))
    return a.path(assets_dir)


def command_for(verb: str, a: Asset, path: Path) -> str:
    """`python -m bjexp.assets <verb> NAME` for `path`: --dir when it is the asset's place in another assets dir
    (paths.assets_dir overridden), --folder when it is a folder of the user's own."""
    if path == a.path(default_assets_dir()):
        return f"{CLI} {verb} {a.name}"
    if path == a.path(path.parent) and a.folder != ".":
        return f"{CLI} --dir {path.parent} {verb} {a.name}"
    return f"{CLI} {verb} {a.name} --folder {path}"


def _fix(a: Asset, path: Path) -> str:
    if not a.downloadable:
        return f"obtain it: {a.how_to_obtain}"
    return f"fill it by hand, or fetch it when online: {command_for('fetch', a, path)}"


def has_entry(folder: Path, entry: str) -> bool:
    return any((folder / alt).is_file() for alt in entry.split("|"))


def check_folder(name: str, folder: str | Path | None = None, *, assets_dir: str | Path | None = None,
                 subfolders: Sequence[str] = ()) -> list[Problem]:
    """What a folder lacks to be asset `name` ([] = complete): missing required files, and configs that say it
    is another kind of model (an SD UNet given as InstructPix2Pix). `folder` defaults to the asset's place in
    the assets dir; `subfolders` limits the check to those parts (("vae",) for the VAE alone)."""
    problems = []
    for a in members(name):
        path = folder_of(a, assets_dir, folder)
        missing = tuple(r for r in a.required_in(subfolders) if not has_entry(path, r))
        if missing:
            problems.append(Problem(f"{a.name} ({a.description})", path, missing, fix=_fix(a, path)))
            continue
        for file, key, want in a.config_checks:
            if subfolders and file.split("/")[0] not in subfolders:
                continue
            got = json.loads((path / file).read_text()).get(key)
            if got != want:
                problems.append(Problem(f"{a.name} ({a.description})", path,
                                        detail=f"{file} has {key}={got}, expected {want}: not a {a.name} folder",
                                        fix=_fix(a, path)))
    return problems


def _checked_files(a: Asset, path: Path, rec: dict, subfolders: Sequence[str]) -> list[str]:
    """URL assets: their own files (a folder may hold others'); folder assets: every recorded file."""
    files = [u.relpath for u in a.urls] if a.urls else list(rec["sha256"])
    return [f for f in files if (not subfolders or f.split("/")[0] in subfolders) and (path / f).is_file()]


def checksum_failures(name: str, folder: str | Path | None = None, *, assets_dir: str | Path | None = None,
                      subfolders: Sequence[str] = ()) -> list[ChecksumError]:
    """Present files whose sha256 differs from the published one or the one recorded at fetch."""
    out = []
    for a in members(name):
        path = folder_of(a, assets_dir, folder)
        rec = read_record(path)
        published = {u.relpath: u for u in a.urls}
        for f in _checked_files(a, path, rec, subfolders):
            u, recorded = published.get(f), rec["sha256"].get(f)
            if not (recorded or (u and u.published)):
                continue
            digest = sha256(path / f)
            if u and u.published and not (digest == u.sha256 if u.sha256 else digest.startswith(u.sha256_prefix)):
                out.append(ChecksumError(path / f, digest, u.sha256 or u.sha256_prefix + "…", "published with the file",
                                         f"delete it and fetch again: `{command_for('fetch', a, path)}`"))
            elif recorded and digest != recorded:
                fix = (f"delete it and fetch again: `{command_for('fetch', a, path)}`" if a.downloadable else
                       f"put the original back, or after changing it on purpose: `{command_for('record', a, path)}`")
                out.append(ChecksumError(path / f, digest, recorded, f"recorded in {path / RECORD}", fix))
    return out


def unverifiable(name: str, folder: str | Path | None = None, *, assets_dir: str | Path | None = None) -> list[Path]:
    """Present files that are unpickled on load and have no checksum to compare (filled by hand, not fetched)."""
    out = []
    for a in members(name):
        if not a.loads_pickle:
            continue
        path = folder_of(a, assets_dir, folder)
        rec = read_record(path)
        published = {u.relpath for u in a.urls if u.published}
        out += [path / f for f in _checked_files(a, path, rec, ())
                if f not in rec["sha256"] and f not in published]
    return out


@lru_cache(maxsize=None)
def _warn_unverified(path: Path, command: str) -> None:
    log.warning("%s has no recorded checksum (filled by hand?) and is unpickled when loaded: it is used unverified. "
                "If it came from the official source, record it once: `%s`", path, command)


def require(name: str, assets_dir: str | Path | None = None, *, folder: str | Path | None = None,
            subfolders: Sequence[str] = (), verify: bool = True) -> Path:
    """The folder of asset `name` (or a user's folder of that kind), complete and intact, or an error.

    Raises MissingWeightsError (every missing file, the path to fill, the fetch command) and, with `verify`,
    ChecksumError for a file whose sha256 is not the published or recorded one. A pickled file with no
    checksum at all is loaded with a warning that says how to record one.
    """
    problems = check_folder(name, folder, assets_dir=assets_dir, subfolders=subfolders)
    if problems:
        raise MissingWeightsError(*problems)
    if verify:
        bad = checksum_failures(name, folder, assets_dir=assets_dir, subfolders=subfolders)
        if bad:
            raise bad[0]
        for m in members(name):
            for p in unverifiable(m.name, folder, assets_dir=assets_dir):
                _warn_unverified(p, command_for("record", m, p.parent))
    a = get(name)
    return Path(assets_dir or default_assets_dir()) if a.includes else folder_of(a, assets_dir, folder)
