"""The miniature world: synthetic patient journeys with known ground truth, in the journey-manifest format.

Everything is a deterministic function of `cfg.data` (seeded), cached on disk under
`<cache_dir>/data/synthetic-<config hash>/`: manifest.csv, images/, masks/ (each study's exact anatomy and finding
masks, in its image's pose), pair_masks/, classifier.npz (independent studies with labels and masks), and one
manifest-<describer>-<key>.csv per report-reading describer.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from bjexp.data import manifest as mf
from bjexp.data.describers import SEVERITY_WORDS, SIDE_WORDS, FindingState, describe
from bjexp.data.findings import LATERAL, PHRASE, SYNTHETIC_FINDINGS
from bjexp.data.phantom import MASK_NAMES, N_RACE, Anatomy, PhantomRenderer, Pose, StudyState, load_lung_masks
from bjexp.data.reports import stored_sections
from bjexp.io import atomic_write, build_once, config_hash
from bjexp.progress import progress

# Bump when the phantoms or journeys change: it is part of the cache key, so stale worlds are never reused.
GENERATOR_VERSION = 4
PRIOR_PREVALENCE = 0.22  # chance a finding is present at a patient's first study
STUDY_GAP_DAYS = (20, 400)
# Report wording (FINDINGS section): a present finding's sentence, and its name in the closing "No ..." sentence.
FINDING_SENTENCE = {"Effusion": "{sev} {side} pleural effusion with a meniscus.",
                    "Cardiomegaly": "the heart is {degree} enlarged.",
                    "Consolidation": "{sev} focal consolidation in the {side} lung.",
                    "Edema": "{haze} perihilar pulmonary edema.",
                    "Pneumothorax": "{sev} {side} pneumothorax."}
NORMAL = {"Effusion": "pleural effusion", "Cardiomegaly": "cardiomegaly", "Consolidation": "focal consolidation",
          "Edema": "pulmonary edema", "Pneumothorax": "pneumothorax"}
DEGREE_WORDS = {1: "mildly", 2: "moderately", 3: "markedly"}
HAZE_WORDS = {1: "faint", 2: "moderate", 3: "dense"}


def sample_anatomy(rng: np.random.Generator, n_masks: int) -> Anatomy:
    return Anatomy(
        mask_index=int(rng.integers(n_masks)),
        sex=int(rng.integers(2)),
        age=float(rng.uniform(20, 90)),
        race=int(rng.integers(N_RACE)),
        habitus=float(rng.uniform(0, 1)),
        ctr=float(rng.uniform(0.36, 0.44)),
        texture_seed=int(rng.integers(2**31)),
        consolidation_site=(float(rng.uniform(-1, 1)), float(rng.uniform(-1, 1))),
    )


def _random_finding(name: str, rng: np.random.Generator, severity: int | None = None) -> FindingState:
    sev = severity or int(rng.integers(1, 4))
    side = None
    if name in LATERAL:
        side = str(rng.choice(["L", "R", "B"] if name == "Effusion" else ["L", "R"]))
    return FindingState(severity=sev, side=side)


def sample_state(rng: np.random.Generator, prevalence: float = PRIOR_PREVALENCE) -> StudyState:
    return StudyState({n: _random_finding(n, rng) for n in SYNTHETIC_FINDINGS if rng.random() < prevalence})


def next_state(state: StudyState, rng: np.random.Generator, change_prob: float) -> StudyState:
    """One step of disease progression: each finding independently new / worse / better / resolved / stable."""
    out = {}
    for n in SYNTHETIC_FINDINGS:
        cur = state.findings.get(n)
        if rng.random() >= change_prob:
            if cur is not None:
                out[n] = cur
            continue
        if cur is None:
            out[n] = _random_finding(n, rng, severity=int(rng.integers(1, 3)))
            continue
        move = rng.choice(["worse", "better", "resolved"], p=[0.35, 0.25, 0.40])
        sev = cur.severity + (1 if move == "worse" else -1)
        if move == "resolved" or sev <= 0:
            continue
        out[n] = FindingState(severity=min(sev, 3), side=cur.side)
    return StudyState(out)


def sample_pose(rng: np.random.Generator, pose_cfg, size: int) -> Pose:
    return Pose(angle=float(rng.uniform(-1, 1) * pose_cfg.rotation_deg),
                tx=float(rng.uniform(-1, 1) * pose_cfg.shift_frac * size),
                ty=float(rng.uniform(-1, 1) * pose_cfg.shift_frac * size),
                scale=float(1 + rng.uniform(-1, 1) * pose_cfg.scale_frac))


def report_sections(state: StudyState) -> tuple[str, str]:
    """(FINDINGS, IMPRESSION) of one study's report. Both describe that study alone (no comparison, no change
    words): the IMPRESSION is what `describer=impression` gives, the paper's "raw Impression of the new report"."""
    seen, normal = [], []
    for n in SYNTHETIC_FINDINGS:
        s = state.findings.get(n)
        if s is None or not s.present:
            normal.append(NORMAL[n])
            continue
        side = SIDE_WORDS.get(s.side or "", "")
        seen.append(FINDING_SENTENCE[n].format(sev=SEVERITY_WORDS[s.severity], side=side,
                                               degree=DEGREE_WORDS[s.severity],
                                               haze=HAZE_WORDS[s.severity]).capitalize())
    if normal:
        seen.append(f"No {', '.join(normal[:-1])}{' or ' if len(normal) > 1 else ''}{normal[-1]}.")
    impression = []
    for n in SYNTHETIC_FINDINGS:
        s = state.findings.get(n)
        if s is None or not s.present:
            continue
        side = f"{SIDE_WORDS[s.side]} " if n in LATERAL and s.side else ""
        impression.append(f"{SEVERITY_WORDS[s.severity]} {side}{PHRASE[n]}")
    return " ".join(seen), "; ".join(impression) if impression else "no acute cardiopulmonary process"


def report_text(state: StudyState) -> str:
    """One study's report, as MIMIC's are stored in the manifest (`bjexp.data.mimic.layout.read_reports`)."""
    findings, impression = report_sections(state)
    return f"FINDINGS: {findings} IMPRESSION: {impression}"


def _state_json(state: StudyState) -> str:
    return json.dumps({n: [s.severity, s.side] for n, s in state.findings.items()}, sort_keys=True)


def world_dir(cfg: DictConfig) -> Path:
    """The cache folder of this synthetic world: manifest.csv, images/, masks/, pair_masks/, classifier.npz."""
    return world_folder(cfg.data, cfg.paths.cache_dir)


def world_folder(data: Any, cache_dir: str | Path) -> Path:
    """`world_dir` from the world's `data:` config and the cache folder."""
    return Path(cache_dir) / "data" / f"synthetic-{config_hash(data, GENERATOR_VERSION)}"


def mask_path(study_id: str) -> str:
    """A study's masks (uint8 bit-planes, `phantom.MASK_NAMES`; `phantom.unpack`), relative to the world folder."""
    patient, study = study_id.split("_")
    return f"masks/{patient}/{study}.png"


def pair_mask_path(pair_id: str) -> str:
    """A pair's current findings drawn in the prior's pose (where the edit should happen, in the prior's frame)."""
    return f"pair_masks/{pair_id}.png"


def build_manifest(cfg: DictConfig) -> Path:
    """Generate (or reuse) the synthetic journeys; returns the manifest path for `cfg.describer`."""
    out = world_dir(cfg)
    build_once(out, lambda tmp: generate(cfg.data, tmp, mask_cache=Path(cfg.paths.cache_dir) / "data"),
               done=(out / "manifest.csv").is_file)
    return described_manifest(out / "manifest.csv", cfg)


def described_manifest(world_manifest: Path, cfg: DictConfig) -> Path:
    """The world's own texts are the label-change template with the truth's severity and side (what
    `describer=labels` words from labels, at full resolution). A describer that reads reports (`impression`, `llm`)
    rewrites `text` from each pair's report sections instead; written once beside the world's manifest."""
    from bjexp.data import describe
    from bjexp.data.mimic.build import RUNTIME_KEYS, _plain

    describer = describe.build(cfg.describer, cfg.paths.cache_dir)
    if not describer.needs_reports:
        return world_manifest
    path = world_manifest.with_name(
        f"manifest-{cfg.describer.name}-{config_hash(_plain(cfg.describer, RUNTIME_KEYS['describer']))}.csv")
    if path.is_file():
        return path
    df = mf.read(world_manifest)
    pairs = df.copy()
    for side in ("prior", "current"):
        findings, impression = zip(*map(stored_sections, df[f"{side}_report"]))
        pairs[f"{side}_findings"], pairs[f"{side}_impression"] = findings, impression
    described = describer(pairs)
    failed = described["text_error"].notna().to_numpy()
    if failed.any():
        with atomic_write(path.with_suffix(".describer_failures.csv"), "w") as f:
            df.loc[failed, ["pair_id"]].assign(reason=described.loc[failed, "text_error"]).to_csv(f, index=False)
    return mf.write(df.loc[~failed].assign(text=described.loc[~failed, "text"]).reset_index(drop=True), path)


def generate(d: DictConfig, out: Path, mask_cache: Path | None = None) -> None:
    size = d.image_size
    rng = np.random.default_rng(d.seed)
    renderer = PhantomRenderer(size, load_lung_masks(size, mask_cache))
    n_masks = len(renderer.masks)
    n_test = int(round(d.n_patients * d.test_fraction))
    n_val = int(round(d.n_patients * d.val_fraction))
    rows = []
    with progress() as bar:
        task = bar.add_task("synthetic journeys", total=d.n_patients)
        for p in range(d.n_patients):
            split = "test" if p < n_test else "val" if p < n_test + n_val else "train"
            anat = sample_anatomy(rng, n_masks)
            n_studies = int(rng.integers(d.min_studies, d.max_studies + 1))
            states = [sample_state(rng)]
            for _ in range(n_studies - 1):
                states.append(next_state(states[-1], rng, d.change_prob))
            day = 0
            studies = []
            for s_idx, st in enumerate(states):
                pose = sample_pose(rng, d.pose, size)
                drawn, layers = renderer.draw(anat, st)
                sid, rel = f"p{p:05d}_s{s_idx:02d}", f"images/p{p:05d}/s{s_idx:02d}.png"
                _save_png(out / rel, renderer.expose(drawn, pose, rng))
                _save_png(out / mask_path(sid), renderer.pack(layers, pose))
                studies.append((sid, rel, st, pose, day, layers))
                day += int(rng.integers(*STUDY_GAP_DAYS))
            for (pid_a, path_a, st_a, pose_a, day_a, _), (pid_b, path_b, st_b, pose_b, day_b, layers_b) in zip(
                    studies, studies[1:]):
                row = {
                    "pair_id": f"{pid_a}__{pid_b}", "patient_id": f"p{p:05d}", "split": split,
                    "prior_study_id": pid_a, "current_study_id": pid_b,
                    "prior_path": path_a, "current_path": path_b,
                    "text": describe(st_a.findings, st_b.findings, SYNTHETIC_FINDINGS),
                    "prior_report": report_text(st_a), "current_report": report_text(st_b),
                    "gap_days": day_b - day_a,
                    "attr_sex": anat.sex, "attr_age": round(anat.age, 2), "attr_race": anat.race,
                    "attr_habitus": round(anat.habitus, 4),
                    "prior_state": _state_json(st_a), "current_state": _state_json(st_b),
                }
                _save_png(out / pair_mask_path(row["pair_id"]), renderer.pack(layers_b, pose_a))
                for which, st in (("prior", st_a), ("current", st_b)):
                    row.update({f"{which}_{k}": v for k, v in st.labels().items()})
                for which, pose in (("prior", pose_a), ("current", pose_b)):
                    row.update({f"{which}_pose_{k}": round(getattr(pose, k), 5) for k in ("angle", "tx", "ty", "scale")})
                rows.append(row)
            bar.advance(task)
        # Independent single studies for the synthetic classifiers and segmenter (never part of a journey).
        task = bar.add_task("classifier images", total=d.classifier_images)
        imgs, masks, labels, attrs = [], [], [], []
        for _ in range(d.classifier_images):
            anat = sample_anatomy(rng, n_masks)
            st = sample_state(rng, prevalence=0.4)
            drawn, layers = renderer.draw(anat, st)
            pose = sample_pose(rng, d.pose, size)
            imgs.append(renderer.expose(drawn, pose, rng))
            masks.append(renderer.pack(layers, pose))
            labels.append([st.labels()[n] for n in SYNTHETIC_FINDINGS])
            attrs.append([anat.sex, anat.age, anat.race])
            bar.advance(task)
    np.savez_compressed(out / "classifier.npz", images=np.stack(imgs), labels=np.asarray(labels, np.int64),
                        attrs=np.asarray(attrs, np.float32), findings=np.asarray(SYNTHETIC_FINDINGS),
                        masks=np.stack(masks), mask_names=np.asarray(MASK_NAMES))
    df = pd.DataFrame(rows)
    mf.require_splits(df, "data=synthetic", f"data.n_patients={d.n_patients} with test_fraction={d.test_fraction}")
    mf.write(df, out / "manifest.csv")


def _save_png(path: Path, img: np.ndarray) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"could not write {path}")
