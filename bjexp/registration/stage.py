"""Manifest-level registration: per-pair content-hash cache, process pool, shards, resume, QC columns, filtering.

Cache layout (under `paths.cache_dir/registration/<method_key>/`, method_key = hash of the method's parameters):
  pairs/<k[:2]>/<k>.json   one record per pair, k = hash(method_key, fixed file bytes, moving file bytes); written
                           last, so its presence means the pair is done (PNG first, both atomic) -> resumable, and
                           shared by every manifest/sweep run that holds the same two images.
  pairs/<k[:2]>/<k>.png    the warped moving image (only for flag ok; otherwise the original image is used).
  manifests/<manifest_hash>-<out_key>/{manifest.csv, dropped.csv, summary.json}   the registered manifest.

Everything written is as private as the input manifest (bjexp.io.mode_like): registering MIMIC keeps it owner-only.
Workers start from a fresh interpreter (forkserver), never a fork of a parent whose threads (OpenCV's pool, torch's
OpenMP, rich's refresh, W&B) may hold a lock mid-fork; a worker that dies or works on one pair for longer than
`registration.stall_timeout_s` is an error naming the pairs in flight, never a silent wait.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import logging
import multiprocessing as mp
import os
import queue
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import cv2
import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from bjexp.data import manifest as mf
from bjexp.errors import UserError
from bjexp.imaging import ImageReadError, read_grey, write_png
from bjexp.io import Mode, atomic_write, config_hash, makedirs, mode_like, write_json
from bjexp.registration.base import Flag, scale_matrix, warp
from bjexp.registration.methods import build_policy, build_registrar
from bjexp.registration.pair import register_pair
from bjexp.threads import allowed_cpus

log = logging.getLogger(__name__)

# Fields that do not change a pair's result (runtime, filtering, naming) and so stay out of the cache key.
NOT_IN_KEY = ("name", "manifest", "same_pairs_as", "workers", "shard", "progress", "min_score", "direction",
              "stall_timeout_s")
QC_COLUMNS = ["reg_flag", "reg_score", "reg_ssim_before", "reg_ssim_after", "reg_oof", "reg_matrix"]
DIRECTIONS = {"current_to_prior": ("prior_path", "current_path"), "prior_to_current": ("current_path", "prior_path")}


def _plain(reg: DictConfig | dict) -> dict:
    return OmegaConf.to_container(reg, resolve=True) if isinstance(reg, DictConfig) else dict(reg)


def method_key(reg: DictConfig | dict) -> str:
    return config_hash({k: v for k, v in _plain(reg).items() if k not in NOT_IN_KEY})


def parse_shard(shard: str | None) -> tuple[int, int]:
    """'i/n' -> (i, n); 'auto' reads the SLURM array variables; None -> (0, 1)."""
    if shard in (None, "", "0/1"):
        return 0, 1
    if shard == "auto":
        if "SLURM_ARRAY_TASK_ID" not in os.environ:
            return 0, 1
        lo = int(os.environ.get("SLURM_ARRAY_TASK_MIN", 0))
        return int(os.environ["SLURM_ARRAY_TASK_ID"]) - lo, int(os.environ["SLURM_ARRAY_TASK_COUNT"])
    try:
        i, n = (int(x) for x in str(shard).split("/"))
    except ValueError:
        raise ValueError(f"registration.shard={shard!r}: expected 'i/n' (e.g. 0/4) or 'auto'") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"registration.shard={shard!r}: need 0 <= i < n")
    return i, n


@dataclass
class PairTask:
    key: str
    fixed: str
    moving: str
    png: str
    json: str
    pair_id: str = ""
    perms: Mode | None = None  # of the written PNG and record (those of the input manifest)

    def __str__(self) -> str:
        return f"{self.pair_id} ({self.fixed} <- {self.moving})"


class RegistrationWorkerError(UserError, RuntimeError):
    """A registration worker died or stalled (the message names the pairs it was working on)."""


# ------------------------------------------------------------------------------------------------ worker side
_STATE: dict[str, Any] = {}


def _init_worker(reg: dict, events: Any = None) -> None:
    _STATE["events"] = events  # (pid, key, started?) messages: which pairs are in flight, for the driver
    cv2.setNumThreads(1)  # one pair per core; OpenCV's own threads would oversubscribe the pool
    _STATE["registrar"] = build_registrar(reg)
    _STATE["fallback"] = build_registrar(reg, fallback=True)
    _STATE["policy"] = build_policy(reg)
    _STATE["size"] = reg.get("size")


def _resize(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return img if img.shape == shape else cv2.resize(img, shape[::-1], interpolation=cv2.INTER_AREA)


def _work(task: PairTask) -> dict:
    """Register one pair; returns its record. Content problems are recorded (and cached), bugs are recorded only."""
    if (events := _STATE.get("events")) is not None:
        events.put((os.getpid(), task.key, True))
    try:
        return _register(task)
    finally:
        if events is not None:
            events.put((os.getpid(), task.key, False))


def _register(task: PairTask) -> dict:
    t0 = time.perf_counter()
    rec: dict[str, Any] = {"key": task.key}
    try:
        fixed = read_grey(task.fixed)
        moving = read_grey(task.moving)
        rec["moving_resized"] = moving.shape != fixed.shape
        moving = _resize(moving, fixed.shape)  # e.g. a 640x591 current against a 640x524 prior
        size = _STATE["size"]
        work_shape = fixed.shape if not size else (int(size), int(size))
        res = register_pair(_STATE["registrar"], _resize(fixed, work_shape), _resize(moving, work_shape),
                            _STATE["policy"], _STATE["fallback"])
        m = scale_matrix(res.matrix, fixed.shape[1] / work_shape[1], fixed.shape[0] / work_shape[0])
        rec.update(flag=res.flag.value, error=res.error, matrix=m.tolist(), metric=res.metric, score=res.score,
                   score_before=res.score_before, ssim_before=res.ssim_before, ssim_after=res.ssim_after,
                   oof=res.out_of_field_frac, work_size=list(work_shape), fallback=res.extra.get("fallback", ""))
        if res.flag is Flag.OK:
            out = res.warped if work_shape == fixed.shape else warp(moving, m, fixed.shape, _STATE["policy"].border)
            write_png(task.png, out, task.perms)
    except ImageReadError as e:  # a corrupt image is a property of its content: cache the verdict
        rec.update(flag=Flag.FAILED.value, error=str(e))
    except Exception as e:  # a bug or a transient problem: report it, keep going, retry on the next run
        rec.update(flag=Flag.FAILED.value, error=f"{type(e).__name__}: {e}", transient=True,
                   traceback=traceback.format_exc(limit=3))
        return rec
    rec["seconds"] = time.perf_counter() - t0
    write_json(task.json, rec, task.perms)  # last: marks the pair done
    return rec


# ------------------------------------------------------------------------------------------------ driver side

def _perms(df: pd.DataFrame) -> Mode | None:
    """Outputs are as private as the manifest they come from (MIMIC: owner-only)."""
    return mode_like(df.attrs["source"]) if df.attrs.get("source") else None


def _file_hash(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def plan(df: pd.DataFrame, reg: dict, root: Path, shard: tuple[int, int] = (0, 1)) -> list[PairTask | None]:
    """One PairTask per manifest row of this shard (rows i, i+n, …; None where an image file is missing).

    Sharding by row keeps each array task to hashing and reading its own rows' images; rows holding the same two
    images in different shards compute the same record, and the atomic writes make that harmless."""
    fixed_col, moving_col = DIRECTIONS[reg["direction"]]
    mkey = method_key(reg)
    pairs_dir = root / mkey / "pairs"
    i, n = shard
    rows = df.iloc[i::n]
    perms = _perms(df)
    tasks: list[PairTask | None] = []
    hashes: dict[Path, str | None] = {}
    for pid, f, m in zip(rows["pair_id"], mf.resolve(rows, fixed_col), mf.resolve(rows, moving_col)):
        if f not in hashes:
            hashes[f] = _file_hash(f)
        if m not in hashes:
            hashes[m] = _file_hash(m)
        hf, hm = hashes[f], hashes[m]
        if hf is None or hm is None:
            tasks.append(None)
            continue
        k = hashlib.sha256(f"{mkey}:{hf}:{hm}".encode()).hexdigest()[:24]
        d = pairs_dir / k[:2]
        tasks.append(PairTask(k, str(f), str(m), str(d / f"{k}.png"), str(d / f"{k}.json"), str(pid), perms))
    return tasks


def run_pairs(tasks: Iterable[PairTask | None], reg: dict, shard: tuple[int, int] = (0, 1)) -> dict[str, dict]:
    """Register every task that has no cached record; returns fresh records by key."""
    i, n = shard
    todo = {t.key: t for t in tasks if t is not None and not Path(t.json).is_file()}
    if not todo:
        return {}
    workers = int(reg.get("workers") or 0) or allowed_cpus()
    workers = max(1, min(workers, len(todo)))
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    cols = (TextColumn(f"registration={reg.get('name')} shard {i}/{n}"), BarColumn(), MofNCompleteColumn(),
            TimeRemainingColumn())
    out: dict[str, dict] = {}
    with Progress(*cols, disable=not reg.get("progress", True)) as bar:
        job = bar.add_task("pairs", total=len(todo))
        if workers == 1:
            threads = cv2.getNumThreads()
            _init_worker(reg)
            try:
                for t in todo.values():
                    out[t.key] = _work(t)
                    bar.advance(job)
            finally:
                cv2.setNumThreads(threads)  # leave the calling process as it was
        else:
            for rec in _pool_map(todo, reg, workers, float(reg.get("stall_timeout_s") or 0)):
                out[rec["key"]] = rec
                bar.advance(job)
    bad = [r for r in out.values() if r.get("transient")]
    if bad:
        log.warning("%d pair(s) raised unexpected errors (not cached, retried next run); first: %s",
                    len(bad), bad[0]["error"])
    return out


def _pool_map(todo: dict[str, PairTask], reg: dict, workers: int, stall_s: float):
    """Yield each task's record from a process pool; a dead or stalled worker raises RegistrationWorkerError."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])  # workers fork from a clean server that has imported this module (once)
    events = ctx.Queue()
    started: dict[str, float] = {}  # key -> when a worker took it (from the workers' own messages)

    def drain() -> None:
        while True:
            try:
                _, key, begun = events.get_nowait()
            except queue.Empty:
                return
            if begun:
                started[key] = time.monotonic()
            else:
                started.pop(key, None)

    def in_flight() -> str:
        drain()
        return "; ".join(str(todo[k]) for k in started) or "(none had started)"

    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(reg, events))
    try:
        # A bounded window of futures: wait() re-arms every pending future on each call, so submitting all
        # 3,169 at once made the parent spend a core of its own (O(n^2)) beside the workers.
        queued, pending = iter(todo.values()), set()
        while True:
            pending |= {pool.submit(_work, t) for t in itertools.islice(queued, 4 * workers - len(pending))}
            if not pending:
                break
            done, pending = wait(pending, timeout=min(stall_s, 5.0) if stall_s else None, return_when=FIRST_COMPLETED)
            for fut in done:
                try:
                    yield fut.result()
                except BrokenProcessPool:
                    raise RegistrationWorkerError(
                        f"registration={reg.get('name')}: a worker process died while registering {in_flight()}. "
                        "Finished pairs are cached; rerun to continue, or check these images "
                        "(registration.workers=1 runs them in this process)") from None
            drain()
            now = time.monotonic()
            stalled = [k for k, t in started.items() if now - t > stall_s] if stall_s else []
            if stalled:
                raise RegistrationWorkerError(
                    f"registration={reg.get('name')}: no result for {stall_s:g} s (registration.stall_timeout_s) from "
                    f"{'; '.join(str(todo[k]) for k in stalled)}. Finished pairs are cached; rerun to continue")
    finally:
        for p in list(getattr(pool, "_processes", {}).values()):  # a stalled worker would block shutdown forever
            if p.is_alive():
                p.kill()
        pool.shutdown(wait=True, cancel_futures=True)
        events.close()


def _load(task: PairTask | None, fresh: dict[str, dict]) -> dict:
    if task is None:
        return {"flag": Flag.FAILED.value, "error": "image file missing", "transient": True}
    if task.key in fresh:
        return fresh[task.key]
    try:
        return json.loads(Path(task.json).read_text())
    except FileNotFoundError:
        return {"flag": Flag.FAILED.value, "error": "not registered yet (another shard?)", "transient": True}


def assemble(df: pd.DataFrame, tasks: list[PairTask | None], fresh: dict[str, dict], reg: dict,
             out_dir: Path) -> Path:
    """Write the registered manifest (kept rows, warped paths, QC columns), dropped.csv and summary.json."""
    fixed_col, moving_col = DIRECTIONS[reg["direction"]]
    recs = [_load(t, fresh) for t in tasks]
    out = df.copy()
    perms = _perms(df)
    makedirs(out_dir, perms)
    out[fixed_col] = [str(p) for p in mf.resolve(df, fixed_col)]
    orig_moving = [str(p) for p in mf.resolve(df, moving_col)]
    out[moving_col] = [os.path.relpath(t.png, out_dir) if r["flag"] == Flag.OK.value else p
                       for t, r, p in zip(tasks, recs, orig_moving)]
    out["reg_method"] = reg["name"]
    out["reg_flag"] = [r["flag"] for r in recs]
    for col, k in (("reg_score", "score"), ("reg_score_before", "score_before"), ("reg_ssim_before", "ssim_before"),
                   ("reg_ssim_after", "ssim_after"), ("reg_oof", "oof")):
        out[col] = [r.get(k, np.nan) for r in recs]
    out["reg_matrix"] = [json.dumps(np.round(r["matrix"], 6).tolist()) if "matrix" in r else "" for r in recs]
    out["reg_error"] = [r.get("error", "") for r in recs]
    reasons = []
    for r in recs:
        if r["flag"] == Flag.FAILED.value:
            reasons.append(f"failed: {r.get('error', '')}")
        elif not r.get("score", -np.inf) >= reg["min_score"]:
            reasons.append(f"low_score: {r.get('score', np.nan):.3f} < {reg['min_score']}")
        else:
            reasons.append("")
    out["reg_drop_reason"] = reasons
    drop = out["reg_drop_reason"] != ""
    kept = out.loc[~drop].drop(columns=["reg_drop_reason", "reg_error"])
    dropped = out.loc[drop, ["pair_id", "patient_id", "split", "reg_drop_reason", "reg_flag", "reg_score",
                             "reg_score_before", "reg_error", fixed_col, moving_col]]
    mf.write(kept.reset_index(drop=True), out_dir / "manifest.csv", perms)
    with atomic_write(out_dir / "dropped.csv", "w", perms) as f:
        dropped.to_csv(f, index=False)
    complete = not any(r.get("transient") for r in recs)
    summary = {"registration": reg["name"], "direction": reg["direction"], "min_score": reg["min_score"],
               "pairs": len(df), "kept": int((~drop).sum()), "dropped": int(drop.sum()),
               "flags": out["reg_flag"].value_counts().to_dict(),
               "kept_by_split": kept["split"].value_counts().to_dict(),
               "median_score_before": float(np.nanmedian(out["reg_score_before"])) if len(out) else None,
               "median_score_after": float(np.nanmedian(out["reg_score"])) if len(out) else None,
               "complete": complete}
    write_json(out_dir / "summary.json", summary, perms)  # last: a complete summary marks the cache entry valid
    return out_dir / "manifest.csv"


def registered_manifest_dir(manifest_path: Path, reg: dict, cache_dir: Path) -> Path:
    out_key = config_hash(method_key(reg), reg["direction"], reg["min_score"])
    return cache_dir / "registration" / method_key(reg) / "manifests" / f"{mf.file_hash(manifest_path)}-{out_key}"


def run(manifest_path: Path, cfg: DictConfig, shard: tuple[int, int] | None = None) -> Path | None:
    """Register (this shard of) a manifest. Unsharded: returns the registered manifest (a cache hit if complete);
    sharded: fills the pair cache only and returns None (assemble with an unsharded run afterwards)."""
    reg = _plain(cfg.registration)
    if reg["direction"] not in DIRECTIONS:
        raise ValueError(f"registration.direction={reg['direction']!r}: expected one of {list(DIRECTIONS)}")
    build_registrar(reg)  # fail on a bad config before reading anything
    manifest_path = Path(manifest_path)
    cache = Path(cfg.paths.cache_dir)
    out_dir = registered_manifest_dir(manifest_path, reg, cache)
    shard = shard or parse_shard(reg.get("shard"))
    summary = out_dir / "summary.json"
    if shard == (0, 1) and summary.is_file() and json.loads(summary.read_text()).get("complete"):
        log.info("registration=%s: cache hit %s", reg["name"], out_dir)
        return out_dir / "manifest.csv"
    df = mf.read(manifest_path)
    tasks = plan(df, reg, cache / "registration", shard)
    fresh = run_pairs(tasks, reg, shard)
    if shard != (0, 1):
        return None
    path = assemble(df, tasks, fresh, reg, out_dir)
    s = json.loads(summary.read_text())
    log.info("registration=%s: kept %d/%d pairs (flags %s) -> %s", reg["name"], s["kept"], s["pairs"],
             s["flags"], path)
    return path
