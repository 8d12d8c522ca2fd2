"""How much of each metric survives the tiny VAE alone: the miniature world's classifier on held-out synthetic
studies as rendered vs after a VAE round trip (encode → posterior mode → decode). A generator that works in
this latent space cannot retain more than the round trip keeps, so this is the ceiling to read `test/*` against.
Every run's own results carry the same ceiling on its test pairs (`latent/*`, from samples_vae/; the report's
`test ÷ latent` row); this benchmark measures it on the classifier's held-out studies, without a run.

    python benchmarks/vae_ceiling.py [hydra overrides...]     # default config; builds what the cache lacks
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main(overrides: list[str]) -> None:
    from hydra import compose, initialize_config_dir

    from bjexp import schema
    from bjexp.data.synthetic import world_dir
    from bjexp.eval import stats
    from bjexp.evaluate import build_predictor
    from bjexp.imaging import model_to_uint8, uint8_to_model
    from bjexp.models.build import build_vae
    from bjexp.workflow import load_data, vae_training_images

    schema.register()
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["data=synthetic", *overrides])
    vae = build_vae(cfg, vae_training_images(load_data(cfg), cfg.model.image_size))
    predictor = build_predictor(cfg)
    held = np.load(world_dir(cfg) / "classifier.npz")
    n = len(held["images"]) // 5  # the classifier's own held-out fifth
    images, labels, attrs = held["images"][:n], held["labels"][:n], held["attrs"][:n]
    with torch.no_grad():
        x = uint8_to_model(images)
        rec = torch.cat([vae.decode(vae.encode(x[i:i + 250]).latent_dist.mode()).sample for i in range(0, n, 250)])
    rows = {}
    for name, imgs in (("as rendered", images), ("VAE round trip", model_to_uint8(rec)[:, 0].numpy())):
        p = predictor.predict(imgs)
        rows[name] = {**{f"auroc/{f}": stats.auroc(p.findings[f], labels[:, j]) for j, f in enumerate(predictor.findings)},
                      "sex_accuracy": stats.accuracy(p.sex >= 0.5, attrs[:, 0] == 1),
                      "race_auroc": stats.multiclass_auroc(p.race, attrs[:, 2]),
                      "age_r": stats.pearson_r(p.age, attrs[:, 1])}
    cols = list(next(iter(rows.values())))
    table = "\n".join([f"| images ({n} held-out studies) | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
                      + [f"| {k} | " + " | ".join(f"{v[c]:.3f}" for c in cols) + " |" for k, v in rows.items()])
    write("vae_ceiling", {"overrides": overrides, "vae": str(vae.config.get("_name_or_path")), "rows": rows}, table)


if __name__ == "__main__":
    main(sys.argv[1:])
