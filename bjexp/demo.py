"""`python -m bjexp.demo run=<run dir>`: a gradio app on a finished run (in the spirit of the seed's demo).

Pick a test pair or upload a prior (PNG, JPEG or DICOM, read like the image store reads its sources), type a
progression text or pick one of the describer's templates, set text/image guidance, steps, seed and sampler, and see
prior | generated | difference map (+ the real current for a test pair), the scales and seed used, and the
evaluation classifier's findings on the prior and the output (the miniature world's CNN; in the real world the xrv
models, when their weights are present). It samples through the run's own generator (`method.generator`, the
JourneyPipeline `sample` calls); a test pair with the run's seed and sampler settings reproduces `samples/<pair>.png`.
Listens on localhost without a share link unless `demo.host` / `demo.share` say otherwise.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig

from bjexp import schema

schema.register()
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # nothing leaves the machine


class DemoError(ValueError):
    """A user's input the demo cannot use; shown as a message in the page."""


@dataclass
class Session:
    cfg: DictConfig
    data: object  # workflow.Data
    generator: object  # the method's generator (JourneyPipeline or a plain callable)
    prompt: str
    samplers: dict  # name -> sampler config (the run's own first)
    predictor: object | None
    predictor_note: str
    templates: list[str]
    rows: np.ndarray  # manifest rows of the test split
    labels: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        return int(self.cfg.model.image_size)


def load_session(cfg: DictConfig) -> Session:
    """The run's method and generator rebuilt exactly as `python -m bjexp.sample run=<dir>` does."""
    from bjexp.methods import build_method
    from bjexp.sample import scored_rows
    from bjexp.tracking.runinfo import run_config
    from bjexp.workflow import load_data

    if not cfg.get("run"):
        raise SystemExit("usage: python -m bjexp.demo run=<run dir written by python -m bjexp.train>")
    run_cfg = run_config(cfg, own=("demo", "progress", "report"))
    method = build_method(run_cfg)
    method.check(run_cfg)
    data = load_data(run_cfg)
    module = method.restore(run_cfg, data, Path(run_cfg.run))
    generator = method.generator(run_cfg, data, module)
    rows = scored_rows(data.df, "test", run_cfg.eval.max_pairs)
    predictor, note = _predictor(run_cfg)
    s = Session(run_cfg, data, generator, getattr(method, "prompt", "text"), sampler_configs(run_cfg), predictor,
                note, templates(list(run_cfg.eval.findings)), rows)
    s.labels = [pair_label(data.df, r) for r in rows]
    return s


def _predictor(cfg: DictConfig):
    from bjexp.evaluate import build_predictor

    try:
        return build_predictor(cfg), ""
    except (FileNotFoundError, RuntimeError, ValueError, OSError) as e:  # e.g. xrv weights absent
        return None, f"scores unavailable: {e}"


def sampler_configs(cfg: DictConfig) -> dict:
    """Every `sampler=` option composed with the run's other choices (so per-model step counts apply); the run's
    own sampler first, as it was."""
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra

    from bjexp.help import group_options

    out = {cfg.sampler.name: cfg.sampler}
    if not GlobalHydra.instance().is_initialized():
        return out
    import json

    info = Path(cfg.run) / "run.json"
    choices = json.loads(info.read_text()).get("choices", {}) if info.is_file() else {}
    fixed = [f"{g}={choices[g]}" for g in ("data", "model", "encoder") if choices.get(g)]  # what specializes it
    for name in group_options("sampler"):
        if name not in out:
            out[name] = compose("config", overrides=[*fixed, f"sampler={name}"]).sampler
    return out


def templates(findings: list[str]) -> list[str]:
    """Progression texts the template describer writes for one finding's change (new, worsening, improving,
    resolved, unchanged; sides for lateral findings), plus 'no change'."""
    from bjexp.data.describers import FindingState, describe
    from bjexp.data.findings import LATERAL

    out = []
    for f in findings:
        side = "L" if f in LATERAL else None
        for prior, cur in ((0, 1), (0, 2), (1, 3), (3, 1), (2, 0), (2, 2)):
            out.append(describe({f: FindingState(prior, side)}, {f: FindingState(cur, side)}, order=(f,)))
    out.append(describe({}, {}))
    return list(dict.fromkeys(out))


def pair_label(df, row: int) -> str:
    r = df.iloc[row]
    text = str(r["text"])
    return f"{r['pair_id']} · {r['patient_id']} · {text[:60]}{'…' if len(text) > 60 else ''}"


# -- the handlers --------------------------------------------------------------------------------------------------
def read_upload(path: str | Path, size: int) -> np.ndarray:
    """An uploaded prior through the image store's readers (PNG/JPEG/DICOM; grey; shorter side resized to the
    model's size, centre crop; never flipped). Too small or too elongated is refused, not stretched."""
    from bjexp.data.image_store import ImageError, fit, read_grey

    try:
        img = read_grey(path)
    except ImageError as e:
        raise DemoError(f"unreadable image: {Path(path).name}: {e}") from None
    h, w = img.shape
    if min(h, w) < size or max(h, w) > 2 * min(h, w):
        raise DemoError(f"wrong size: {Path(path).name} is {w}x{h} px; this model needs at least {size} px on the "
                        f"shorter side and an aspect ratio within 1:2 (it is centre-cropped to {size}x{size})")
    return fit(img, size)


def pick_pair(session: Session, label: str | None):
    """(text, prior, real current) of a test pair."""
    row = _row(session, label)
    t = session.data.tables
    prior = t.images[session.data.index["prior"][row]].numpy()
    cur = t.images[session.data.index["current"][row]].numpy()
    return str(session.data.df["text"].iat[row]), prior, cur


def _row(session: Session, label: str | None) -> int:
    if label not in session.labels:
        raise DemoError(f"unknown test pair {label!r}: pick one from the list")
    return int(session.rows[session.labels.index(label)])


def generate(session: Session, label: str | None, upload: str | None, text: str, text_guidance: float,
             image_guidance: float, steps: int, seed: int | None, randomize: bool, sampler: str):
    """One follow-up: (prior, generated, difference map, real current or None, what was used, scores table, seed)."""
    from bjexp.models.guidance import pair_generator
    from bjexp.sample import conditions

    text = (text or "").strip()
    if not text:
        raise DemoError("empty instruction: type a progression text (e.g. 'new small left pleural effusion') or "
                        "pick a template")
    steps = int(steps)
    if not 1 <= steps <= 1000:
        raise DemoError(f"steps={steps}: choose 1 to 1000")
    seed = random.randrange(2**31) if randomize or seed is None else int(seed)
    gen = session.generator
    if sampler not in session.samplers:
        raise DemoError(f"unknown sampler {sampler!r}; choose one of {sorted(session.samplers)}")
    if sampler != session.cfg.sampler.name and hasattr(gen, "with_scheduler"):
        gen = gen.with_scheduler(session.samplers[sampler])
    device = getattr(gen, "device", "cpu")
    if upload:
        prior = read_upload(upload, session.size)
        inputs = {"images": torch.from_numpy(prior[None]), "texts": [text]}
        noise = torch.Generator(device=device).manual_seed(seed)
        current, source = None, f"upload {Path(upload).name}"
    else:
        row = _row(session, label)
        inputs = conditions(session.data, [row], session.prompt)
        if text != inputs["texts"][0]:  # an edited text is encoded afresh; the cached prior latent stays
            inputs.pop("text_states", None)
            inputs["texts"] = [text]
        pid = session.data.df["pair_id"].iat[row]
        noise = pair_generator(pid, seed, device)  # the run's per-pair noise: seed = run seed reproduces samples/
        prior = inputs["images"][0].numpy()
        current = session.data.tables.images[session.data.index["current"][row]].numpy()
        source = f"test pair {pid}"
    out = gen(**inputs, steps=steps, image_guidance=float(image_guidance), text_guidance=float(text_guidance),
              generators=[noise])
    out = out[0].cpu().numpy()
    used = {"prior": source, "text": text, "sampler": sampler, "steps": steps, "text_guidance": float(text_guidance),
            "image_guidance": float(image_guidance), "seed": seed}
    return prior, out, difference_map(prior, out), current, used, scores(session, prior, out, current), seed


def difference_map(prior: np.ndarray, out: np.ndarray) -> np.ndarray:
    """generated − prior as RGB: red where the output is brighter, blue where darker (±128 grey levels)."""
    from matplotlib import colormaps

    d = (out.astype(np.float32) - prior.astype(np.float32)) / 256.0 + 0.5
    return (colormaps["RdBu_r"](np.clip(d, 0, 1))[..., :3] * 255).round().astype(np.uint8)


def scores(session: Session, prior: np.ndarray, out: np.ndarray, current: np.ndarray | None) -> list[list]:
    """Rows (finding, prior, generated[, real current]): the evaluation classifier's probabilities, age, sex."""
    if session.predictor is None:
        return [[session.predictor_note, "", "", ""]]
    imgs = [prior, out] + ([current] if current is not None else [])
    p = session.predictor.predict(np.stack(imgs))
    rows = [[f, *[round(float(v), 3) for v in p.findings[f]]] for f in session.predictor.findings]
    if p.age is not None:
        rows.append(["age (years)", *[round(float(v), 1) for v in p.age]])
    if p.sex is not None:
        rows.append(["P(sex = 1)", *[round(float(v), 3) for v in p.sex]])
    return [r + [""] * (4 - len(r)) for r in rows]


# -- the app -------------------------------------------------------------------------------------------------------
def build_app(session: Session):
    import gradio as gr

    def ui(fn):
        """DemoError -> a message in the page (gr.Error), not a traceback."""
        def wrapped(*a):
            try:
                return fn(*a)
            except DemoError as e:
                raise gr.Error(str(e)) from None
        return wrapped

    cfg, s = session.cfg, session.cfg.sampler
    first = session.labels[0] if session.labels else None
    text0, prior0, cur0 = pick_pair(session, first) if first else ("", None, None)
    can_switch = hasattr(session.generator, "with_scheduler")
    with gr.Blocks(title="bjexp demo", analytics_enabled=False) as app:
        gr.Markdown(f"## bjexp: counterfactual follow-up CXR\nRun `{cfg.run}` · method **{cfg.method.name}** · "
                    f"data **{cfg.data.name}** · {cfg.model.image_size} px. "
                    + (session.predictor_note or f"Scores: {getattr(session.predictor, 'name', '')} classifier."))
        with gr.Row():
            with gr.Column(scale=1):
                pair = gr.Dropdown(session.labels, value=first, label="test pair")
                upload = gr.File(label="or upload a prior (PNG, JPEG, DICOM)", type="filepath",
                                 file_types=[".png", ".jpg", ".jpeg", ".dcm", ".dicom"])
                text = gr.Textbox(text0, label="progression text", lines=2)
                template = gr.Dropdown(session.templates, value=None, label="or pick a template")
                text_g = gr.Slider(0, 20, value=float(s.text_guidance), step=0.5, label="text guidance")
                image_g = gr.Slider(0, 10, value=float(s.image_guidance), step=0.1, label="image guidance")
                steps = gr.Slider(1, 200, value=int(s.steps), step=1, label="steps")
                with gr.Row():
                    seed = gr.Number(int(cfg.seed), precision=0, label="seed")
                    randomize = gr.Checkbox(False, label="randomize seed")
                sampler = gr.Dropdown(list(session.samplers), value=s.name, label="sampler", interactive=can_switch)
                go = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column(scale=2):
                with gr.Row():
                    prior_img = gr.Image(prior0, label="prior", type="numpy", format="png", image_mode="L",
                                         elem_id="prior")
                    gen_img = gr.Image(label="generated", type="numpy", format="png", image_mode="L",
                                       elem_id="generated")
                    diff_img = gr.Image(label="difference (red brighter, blue darker)", type="numpy", format="png",
                                        elem_id="difference")
                    cur_img = gr.Image(cur0, label="real current (test pair)", type="numpy", format="png",
                                       image_mode="L", elem_id="current")
                used = gr.JSON(label="used")
                table = gr.Dataframe(headers=["", "prior", "generated", "real current"], label="findings",
                                     interactive=False)

        def on_pair(label):
            t, p, c = pick_pair(session, label)
            return t, p, c

        def on_upload(path):
            if not path:
                return gr.update(), gr.update()
            return read_upload(path, session.size), None

        pair.change(ui(on_pair), [pair], [text, prior_img, cur_img], api_name="pick_pair")
        upload.change(ui(on_upload), [upload], [prior_img, cur_img], api_name="upload_prior")
        template.change(lambda t: t or gr.update(), [template], [text], api_name="use_template")
        go.click(ui(lambda *a: generate(session, *a)),
                 [pair, upload, text, text_g, image_g, steps, seed, randomize, sampler],
                 [prior_img, gen_img, diff_img, cur_img, used, table, seed], api_name="generate")
    return app


def launch(app, dcfg, block: bool = True):
    return app.launch(server_name=dcfg.host, server_port=dcfg.port or None, share=dcfg.share, show_error=True,
                      prevent_thread_lock=not block, quiet=False)


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    session = load_session(cfg)
    launch(build_app(session), cfg.demo)


if __name__ == "__main__":
    main()
