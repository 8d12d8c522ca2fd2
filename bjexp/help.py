"""What `python -m bjexp.<stage> --help` shows: the stage's own description, its config groups with their real
options (the default marked; the ConfigStore schema entries every option builds on are not options), and the
composed config (`conf/hydra/help/bjexp.yaml` is the template; these resolvers fill it in)."""
from __future__ import annotations

import importlib
import textwrap

from omegaconf import OmegaConf


def stage_doc(job_name: str) -> str:
    """The stage module's docstring (`bjexp.<job_name>`), or nothing for a job that is not a bjexp stage."""
    try:
        doc = importlib.import_module(f"bjexp.{job_name}").__doc__ or ""
    except ImportError:
        return ""
    return textwrap.dedent(doc).strip()


def config_groups(choices) -> str:
    """`group: option, *default, ...` for every non-Hydra group. Groups chosen by interpolation (specializing
    configs such as `model_overrides: ${model}`) follow the other choices and are listed apart."""
    from hydra.core.global_hydra import GlobalHydra

    loader = GlobalHydra.instance().config_loader()
    choices = dict(choices or {})
    automatic = _interpolated_groups()

    def groups(parent: str = ""):
        for g in loader.list_groups(parent):
            name = f"{parent}/{g}" if parent else g
            if name == "hydra" or name.startswith("hydra/"):
                continue
            yield name
            yield from groups(name)

    lines, auto = [], []
    for g in sorted(groups()):
        real = group_options(g)
        if not real:
            continue
        if g in automatic:
            auto.append(g)
            continue
        lines.append(f"  {g}: " + ", ".join(f"*{o}" if choices.get(g) == o else o for o in real))
    out = "\n".join(lines)
    if auto:
        out += f"\n  (chosen by the groups above, not on the command line: {', '.join(auto)})"
    return out


def group_options(group: str) -> list[str]:
    """A config group's options (inside a Hydra app), without the ConfigStore schema entries they build on."""
    from hydra.core.config_store import ConfigStore
    from hydra.core.global_hydra import GlobalHydra

    node = ConfigStore.instance().repo
    for part in group.split("/"):
        node = node.get(part, {}) if isinstance(node, dict) else {}
    return [o for o in GlobalHydra.instance().config_loader().get_group_options(group) if f"{o}.yaml" not in node]


def _interpolated_groups() -> set[str]:
    from pathlib import Path

    import yaml

    conf = yaml.safe_load((Path(__file__).resolve().parents[1] / "conf" / "config.yaml").read_text())
    out = set()
    for d in conf.get("defaults", []):
        for k, v in (d.items() if isinstance(d, dict) else ()):
            if isinstance(v, str) and "${" in v:
                out.add(str(k).removeprefix("optional ").strip())
    return out


def register() -> None:
    for name, fn in (("bjexp.stage_doc", stage_doc), ("bjexp.config_groups", config_groups)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
