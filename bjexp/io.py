"""Small I/O helpers: atomic writes, private modes, cache-entry locks, content hashes of configs and files."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from omegaconf import DictConfig, ListConfig, OmegaConf

# Bump when a cached artefact's format or the code that makes it changes meaningfully.
CACHE_VERSION = "1"
STALE_TMP_S = 24 * 3600  # a temp entry this old is an orphan whoever made it


@dataclass(frozen=True)
class Mode:
    """Permission bits for files and the folders created for them."""
    file: int
    dir: int


def private_mode(group_readable: bool = False) -> Mode:
    """MIMIC-derived files: owner only (0600/0700), or owner + group read (0640/0750) when the config says so."""
    return Mode(0o640, 0o750) if group_readable else Mode(0o600, 0o700)


def mode_like(path: str | Path) -> Mode | None:
    """The private mode of an input file that is not world-readable (outputs derived from it stay as private), or
    None (the umask's default) when it is."""
    st = Path(path).stat()
    return None if st.st_mode & 0o004 else private_mode(bool(st.st_mode & 0o040))


def makedirs(path: str | Path, mode: Mode | None = None) -> Path:
    """mkdir -p; folders it creates get `mode.dir` (exactly, whatever the umask)."""
    path = Path(path)
    if mode is None:
        path.mkdir(parents=True, exist_ok=True)
        return path
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for p in reversed(missing):
        with contextlib.suppress(FileExistsError):
            p.mkdir()
            os.chmod(p, mode.dir)
    return path


def _owner_tag() -> str:
    """host-pid, written into temp names so a later build can tell an orphan (its process gone) from work in flight."""
    return f"{socket.gethostname().replace('.', '_')}-{os.getpid()}"


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb", perms: Mode | None = None, fsync: bool = False) -> Iterator[Any]:
    """Write to a temporary file beside `path`, then rename: readers never see a half-written file, and a failed
    write (a full disk, a kill) leaves the previous file as it was. `perms`: the file's mode (and its new folders');
    None = 0666 minus the umask. `fsync`: flush to the disk before the rename (large, precious files)."""
    path = Path(path)
    makedirs(path.parent, perms)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{_owner_tag()}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, perms.file if perms else 0o666 & ~_umask())  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_dir(path: str | Path, perms: Mode | None = None) -> Iterator[Path]:
    """Build a directory under a temporary name, then rename it into place (all or nothing)."""
    path = Path(path)
    makedirs(path.parent, perms)
    clean_stale_tmp(path.parent)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.{_owner_tag()}.", suffix=".tmp"))
    try:
        yield tmp
        os.chmod(tmp, perms.dir if perms else 0o777 & ~_umask())  # mkdtemp makes 0700
        try:
            if path.exists():  # another process finished first; keep theirs
                raise FileExistsError(errno.EEXIST, "exists", str(path))
            os.replace(tmp, path)
        except OSError as e:
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            shutil.rmtree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


_TMP = re.compile(r"^\..+\.(?P<host>[^.]+)-(?P<pid>\d+)\.[^.]+\.tmp$")


def clean_stale_tmp(folder: str | Path, max_age_s: float = STALE_TMP_S) -> list[Path]:
    """Remove orphan temp entries (`.*.tmp`) in `folder`: those whose owning process on this host is gone, and any
    older than `max_age_s`. A SIGKILL during an atomic build leaves them; nothing else ever would."""
    removed = []
    host, now = socket.gethostname().replace(".", "_"), time.time()
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return removed
    for e in entries:
        if not (e.name.startswith(".") and e.name.endswith(".tmp")):
            continue
        m = _TMP.match(e.name)
        try:
            old = now - e.stat(follow_symlinks=False).st_mtime > max_age_s
        except FileNotFoundError:
            continue
        orphan = m is not None and m["host"] == host and int(m["pid"]) != os.getpid() and not _alive(int(m["pid"]))
        if old or orphan:
            if e.is_dir(follow_symlinks=False):
                shutil.rmtree(e.path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(e.path)
            removed.append(Path(e.path))
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


@contextlib.contextmanager
def cache_lock(path: str | Path) -> Iterator[None]:
    """An exclusive lock per cache entry (`.<name>.lock` beside it), held while the entry is built: a second process
    preparing the same entry waits, then finds it built and reuses it."""
    import fcntl

    path = Path(path)
    makedirs(path.parent)
    lock = path.parent / f".{path.name}.lock"
    with open(lock, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another process that is building {path} ...", file=sys.stderr, flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def build_once(path: str | Path, build: Callable[[Path], None], done: Callable[[], bool] | None = None,
               perms: Mode | None = None) -> Path:
    """A cache folder built at most once across processes: returned as is when `done()`; otherwise built by
    `build(tmp)` into a temporary folder under the entry's lock, then renamed into place."""
    path = Path(path)
    done = done or path.exists
    if done():
        return path
    with cache_lock(path):
        if not done():  # a process we waited for may have built it
            with atomic_dir(path, perms) as tmp:
                build(tmp)
    return path


def write_json(path: str | Path, obj: Any, perms: Mode | None = None) -> Path:
    with atomic_write(path, "w", perms) as f:
        json.dump(obj, f, indent=2, sort_keys=False, default=str)
    return Path(path)


def to_plain(obj: Any) -> Any:
    if isinstance(obj, (DictConfig, ListConfig)):
        return OmegaConf.to_container(obj, resolve=True)
    return obj


def config_hash(*parts: Any, length: int = 12) -> str:
    """Stable hash of config fragments (resolved, key-sorted JSON) plus the cache version."""
    payload = json.dumps([CACHE_VERSION, *[to_plain(p) for p in parts]], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:length]


def bytes_hash(data: bytes, length: int = 16) -> str:
    return hashlib.sha256(data).hexdigest()[:length]


def images_hash(images: Any) -> str:
    """Content hash of an image set (an array; order-sensitive, shape included)."""
    import numpy as np

    images = np.ascontiguousarray(images)
    return bytes_hash(repr(images.shape).encode() + images.tobytes())


def files_hash(paths: list[str | Path], length: int = 16) -> str:
    """Content hash over a list of files (order-sensitive)."""
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).read_bytes())
    return h.hexdigest()[:length]


def stat_fingerprint(paths: Iterable[str | Path], length: int = 16) -> str:
    """Hash of (path, size, mtime) of each file, a missing one as such: cheap, and it changes whenever a file is
    added, removed, replaced or fixed (the cache keys of prepared data cover their source files this way)."""
    h = hashlib.sha256()
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except FileNotFoundError:
            h.update(f"{p}\0missing\n".encode())
    return h.hexdigest()[:length]
