"""Progression describers (`describer=` group): two studies -> the text the model is conditioned on."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


# Each describer's `_target_` is a class with from_config(cfg, cache_dir, perms) -> a Describer
# (bjexp.data.describe: the protocol and its one call site, `build`).
@dataclass
class LabelsDescriberConfig:
    """Offline, from the CheXpert label change (the miniature world's template engine)."""
    name: str = "labels"
    _target_: str = "bjexp.data.describe.labels.LabelsDescriber"
    # Uncertain (-1) labels: uncertain (worded 'possible') | positive | negative.
    uncertain: str = "uncertain"
    # Blank (not mentioned) labels: absent (CheXpert convention) | unknown (blank in the current study: no claim
    # about that finding, so no 'resolved X' just because the new report did not mention X).
    blank: str = "absent"
    # Findings described, in this order (canonical xrv names); empty = all but 'No Finding'.
    findings: list[str] = field(default_factory=list)


@dataclass
class ImpressionDescriberConfig:
    """The current report's IMPRESSION (fallback FINDINGS): the paper's ablation."""
    name: str = "impression"
    _target_: str = "bjexp.data.describe.impression.ImpressionDescriber"
    fallback_findings: bool = True
    max_chars: Optional[int] = None


@dataclass
class LLMDescriberConfig:
    """The paper's GPT-4 step through any OpenAI-compatible chat-completions endpoint.

    MIMIC's data use agreement forbids sending notes to arbitrary third parties: `endpoint` has no default and must
    name a service you are allowed to use (e.g. a local vLLM server or an approved Azure deployment).
    The key is read from the environment variable named by `api_key_env`; it never enters the config.
    """
    name: str = "llm"
    _target_: str = "bjexp.data.describe.llm.LLMDescriber"
    endpoint: str = MISSING  # full URL of .../chat/completions
    model: str = MISSING
    api_key_env: str = "BJEXP_LLM_API_KEY"
    # bearer: 'Authorization: Bearer <key>' (OpenAI, vLLM); api-key: 'api-key: <key>' (Azure OpenAI).
    auth: str = "bearer"
    system_prompt: str = (
        "You are a radiologist. Given the findings of a prior and a current chest X-ray report of the same patient, "
        "describe in one short sentence how the findings changed. Mention only findings visible on a chest X-ray; "
        "no dates, no names, no comparison to other studies.")
    prompt: str = "Prior report:\n{prior}\n\nCurrent report:\n{current}\n\nChange:"
    temperature: float = 0.0
    max_tokens: int = 96
    # Operational knobs (not part of the cache key).
    concurrency: int = 4
    max_retries: int = 6
    backoff_s: float = 1.0
    backoff_max_s: float = 60.0
    timeout_s: float = 60.0
    # At most this many HTTP requests per run (retries included); cached answers are free. Pairs left unasked mark
    # the manifest incomplete: the next run asks for exactly those.
    request_budget: int = 50000
    # Stop the whole run after this many connection failures in a row (the endpoint is down), with one message.
    circuit_breaker: int = 5
    # Honour HTTP(S)_PROXY / ALL_PROXY / .netrc. Off: report text and the key go to `endpoint` and nowhere else.
    trust_env: bool = False
    # Request cache folder; null = <paths.cache_dir>/llm.
    cache_dir: Optional[str] = None


cs = ConfigStore.instance()
cs.store(group="describer", name="base_describer_labels", node=LabelsDescriberConfig)
cs.store(group="describer", name="base_describer_impression", node=ImpressionDescriberConfig)
cs.store(group="describer", name="base_describer_llm", node=LLMDescriberConfig)
