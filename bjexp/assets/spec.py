"""What an asset is (sources, required files, checks) and the one error family for weights that are not there."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

RECORD = "bjexp-asset.json"  # per asset folder: sources + sha256 of every file, written by fetch / record
CLI = "python -m bjexp.assets"


def default_assets_dir() -> Path:
    """`paths.assets_dir`'s default: $BJEXP_ASSETS, else ~/.cache/bjexp/assets."""
    return Path(os.environ.get("BJEXP_ASSETS") or Path.home() / ".cache" / "bjexp" / "assets")


@dataclass(frozen=True)
class HubSource:
    """Files of a Hugging Face repository at a pinned commit (`revision`: 40 hex digits)."""
    repo_id: str
    revision: str | None  # None = unpinned: then `unpinned` says why
    files: tuple[str, ...]  # allow_patterns for snapshot_download
    unpinned: str = ""

    @property
    def label(self) -> str:
        return f"{self.repo_id}@{self.revision or 'main (UNPINNED: ' + self.unpinned + ')'}"


@dataclass(frozen=True)
class UrlFile:
    """One file downloaded by URL; `sha256` / `sha256_prefix` when its publisher gives one."""
    relpath: str  # inside the asset's folder
    url: str
    sha256: str | None = None
    sha256_prefix: str | None = None  # torch.hub style: the first hex digits, in the file name

    @property
    def published(self) -> str | None:
        return self.sha256 or self.sha256_prefix


@dataclass(frozen=True)
class Asset:
    name: str
    folder: str  # relative to the assets dir
    description: str
    # Files a complete folder has, relative to it; "a|b" = either. Empty for a bundle.
    required: tuple[str, ...] = ()
    hub: tuple[HubSource, ...] = ()
    urls: tuple[UrlFile, ...] = ()
    includes: tuple[str, ...] = ()  # a bundle: these assets together (e.g. `eval`)
    how_to_obtain: str = ""  # for assets no command can download (licence / registration)
    # (file, key, value) a folder's JSON config must hold, e.g. an InstructPix2Pix UNet takes 8 channels.
    config_checks: tuple[tuple[str, str, object], ...] = ()
    config_key: str = ""  # the config field that points a run at a folder of this kind
    loads_pickle: bool = False  # its loader unpickles (torch.load weights_only=False): never load it unverified
    optional: bool = False  # an alternative no default run needs (listed, not reported missing)

    def path(self, assets_dir: str | Path | None = None) -> Path:
        return Path(assets_dir or default_assets_dir()) / self.folder

    @property
    def downloadable(self) -> bool:
        return bool(self.hub or self.urls or self.includes)

    @property
    def file(self) -> str:
        """The one file of a single-file asset (an xrv weight, Inception), relative to its folder."""
        if len(self.required) != 1:
            raise ValueError(f"{self.name} is not a single-file asset")
        return self.required[0]

    @property
    def fetch_command(self) -> str:
        return f"{CLI} fetch {self.name}"

    def required_in(self, subfolders: Sequence[str] = ()) -> list[str]:
        """Required entries, optionally only those under the given subfolders (e.g. ("vae",))."""
        return [r for r in self.required if not subfolders or r.split("/")[0] in subfolders]


@dataclass(frozen=True)
class Run:
    """A run (config overrides) and the assets it needs; `verify` says which the present assets enable."""
    overrides: str
    needs: tuple[str, ...]
    what: str


@dataclass(frozen=True)
class Problem:
    """One thing to fix: `path` (a folder or file) lacks `missing`, or fails `detail`."""
    what: str
    path: Path
    missing: tuple[str, ...] = ()
    detail: str = ""
    fix: str = ""

    def text(self) -> str:
        lines = [f"missing weights: {self.what}"]
        if len(self.missing) == 1 and not self.detail:
            lines.append(f"  path:    {self.path / self.missing[0].split('|')[0]}")
        elif not self.path.exists():
            lines.append(f"  path:    {self.path}  (does not exist)")
        else:
            lines.append(f"  path:    {self.path}")
            if self.missing:
                shown = [m.replace("|", " (or ") + (")" if "|" in m else "") for m in self.missing]
                lines.append(f"  missing: {', '.join(shown)}")
        if self.detail:
            lines.append(f"  problem: {self.detail}")
        if self.fix:
            lines.append(f"  {self.fix}")
        return "\n".join(lines)


class MissingWeightsError(FileNotFoundError):
    """Weights a run needs are not on disk: one block per problem, naming the path to fill and how to fill it."""

    def __init__(self, *problems: Problem) -> None:
        self.problems = problems
        super().__init__("\n".join(p.text() for p in problems))

    def __str__(self) -> str:
        return self.args[0]


class ChecksumError(MissingWeightsError):
    """A weight file is there but is not the file that was fetched (or published): its sha256 differs."""

    def __init__(self, path: Path, actual: str, expected: str, origin: str, fix: str) -> None:
        self.problems = ()
        self.path = Path(path)
        FileNotFoundError.__init__(
            self, f"checksum mismatch: {path}\n  sha256:   {actual}\n  expected: {expected} ({origin})\n  {fix}")


class UnknownAssetError(KeyError):
    def __str__(self) -> str:
        return self.args[0]


class FetchError(RuntimeError):
    """`fetch` could not complete (offline, network, a download that lacks files); one line for the CLI."""
