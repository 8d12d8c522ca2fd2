"""`describer=llm`: the paper's GPT-4 step through any OpenAI-compatible chat-completions endpoint.

- Every answer is cached on disk, keyed by the exact request body (model, prompt template rendered with the two
  reports' inputs, temperature, max_tokens): a crash or a rerun never pays twice for the same request.
- At most `concurrency` requests in flight; 429 / 5xx / connection errors are retried with exponential backoff
  (honouring Retry-After); other 4xx fail at once. A run sends at most `request_budget` HTTP requests.
- A row whose request failed gets its reason in `text_error`; it is never silently dropped. Transient failures
  (retries used up, budget spent) are flagged `text_retry`: the manifest is marked incomplete and a rerun asks again.
- A dead endpoint trips a circuit breaker: after `circuit_breaker` connection failures in a row the whole call stops
  with `LLMUnreachable` (answers so far stay cached), instead of minutes of retries.
- MIMIC's data use agreement forbids sending notes to arbitrary third parties, so the endpoint has no default, and
  proxy variables (HTTP(S)_PROXY, ...) are ignored unless `trust_env=true`: report text goes to the endpoint only.
  The request cache holds report text and is written owner-only (bjexp.io.private_mode).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from bjexp.data.describe import options, result
from bjexp.errors import UserError
from bjexp.io import Mode, atomic_write, private_mode
from bjexp.schema.describer import LLMDescriberConfig

_DEFAULT = LLMDescriberConfig()
log = logging.getLogger(__name__)
RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
Answer = tuple  # (text or None, error or None, retry on a rerun)


class LLMConfigError(UserError, ValueError):
    pass


class LLMUnreachable(UserError, ConnectionError):
    """The endpoint refused or dropped `circuit_breaker` connections in a row."""


class LLMDescriber:
    needs_reports = True

    def __init__(self, endpoint: str, model: str, cache_dir: str | Path, *, api_key_env: str = "BJEXP_LLM_API_KEY",
                 auth: str = "bearer", system_prompt: str = _DEFAULT.system_prompt, prompt: str = _DEFAULT.prompt,
                 temperature: float = 0.0, max_tokens: int = 96, concurrency: int = 4, max_retries: int = 6,
                 backoff_s: float = 1.0, backoff_max_s: float = 60.0, timeout_s: float = 60.0,
                 request_budget: int = 50000, trust_env: bool = False, circuit_breaker: int = 5,
                 perms: Mode | None = None):
        if not endpoint or not str(endpoint).startswith(("http://", "https://")):
            raise LLMConfigError(
                f"describer.endpoint={endpoint!r}: set the full URL of an OpenAI-compatible /chat/completions "
                "endpoint you are allowed to send MIMIC notes to (the data use agreement forbids arbitrary third "
                "parties; there is deliberately no default).")
        if not model:
            raise LLMConfigError("describer.model is not set (the model name the endpoint serves)")
        if auth not in ("bearer", "api-key"):
            raise LLMConfigError(f"describer.auth={auth!r}: expected bearer or api-key")
        for k in ("{prior}", "{current}"):
            if k not in prompt:
                raise LLMConfigError(f"describer.prompt must contain {k} (the template is filled per pair)")
        self.endpoint, self.model, self.cache_dir = endpoint, model, Path(cache_dir)
        self.api_key_env, self.auth = api_key_env, auth
        self.system_prompt, self.prompt = system_prompt, prompt
        self.temperature, self.max_tokens = temperature, max_tokens
        self.concurrency, self.max_retries = max(1, concurrency), max_retries
        self.backoff_s, self.backoff_max_s, self.timeout_s = backoff_s, backoff_max_s, timeout_s
        self.request_budget = request_budget
        self.trust_env = trust_env  # honour proxy variables (and .netrc): off, report text goes to `endpoint` only
        self.circuit_breaker = max(1, circuit_breaker)
        self.perms = perms or private_mode()
        self.requests_sent = 0  # HTTP requests of the last call (retries included)
        self._connect_failures = 0  # in a row, over all requests of a call
        self._tripped: str | None = None

    @classmethod
    def from_config(cls, cfg: DictConfig | dict[str, Any], cache_dir: str | Path | None,
                    perms: Mode | None = None) -> "LLMDescriber":
        if isinstance(cfg, DictConfig):
            for k in ("endpoint", "model"):
                if OmegaConf.is_missing(cfg, k):
                    raise LLMConfigError(
                        f"describer.{k} is not set. describer=llm needs describer.endpoint=<URL of an "
                        "OpenAI-compatible /chat/completions you may send MIMIC notes to> and describer.model=<name>; "
                        f"the key is read from ${cfg.get('api_key_env', 'BJEXP_LLM_API_KEY')}.")
        kw = options(cfg)
        cdir = kw.pop("cache_dir", None) or (Path(cache_dir) / "llm" if cache_dir else None)
        if cdir is None:
            raise LLMConfigError("describer=llm needs describer.cache_dir or paths.cache_dir for its request cache")
        return cls(cache_dir=cdir, perms=perms, **kw)

    # -- requests and the cache ---------------------------------------------------------------------------------
    def body(self, prior: str, current: str) -> dict[str, Any]:
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        messages.append({"role": "user", "content": self.prompt.format(prior=prior, current=current)})
        return {"model": self.model, "messages": messages, "temperature": self.temperature,
                "max_tokens": self.max_tokens}

    @staticmethod
    def key(body: dict[str, Any]) -> str:
        return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()

    def _cache_path(self, key: str) -> Path:
        return self.cache_dir / key[:2] / f"{key}.json"

    def cached(self, key: str) -> str | None:
        p = self._cache_path(key)
        if not p.is_file():
            return None
        try:
            return json.loads(p.read_text())["text"]
        except (json.JSONDecodeError, KeyError, OSError):
            return None  # a damaged entry is simply asked again

    def _store(self, key: str, body: dict[str, Any], text: str) -> None:
        with atomic_write(self._cache_path(key), "w", self.perms) as f:
            json.dump({"request": body, "text": text}, f, ensure_ascii=False)

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.api_key_env)
        if not key:
            return {}
        return {"Authorization": f"Bearer {key}"} if self.auth == "bearer" else {"api-key": key}

    # -- the call ---------------------------------------------------------------------------------------------
    def __call__(self, pairs: pd.DataFrame) -> pd.DataFrame:
        for c in ("prior_report", "current_report"):
            if c not in pairs:
                raise ValueError(f"describer=llm: pairs lack column {c!r} (reports were not loaded)")
        texts = list(zip(pairs["prior_report"].fillna(""), pairs["current_report"].fillna("")))
        bodies = [self.body(p, c) for p, c in texts]
        keys = [self.key(b) for b in bodies]
        answers: dict[str, Answer] = {}
        todo: dict[str, dict] = {}
        for k, b, (p, c) in zip(keys, bodies, texts):
            if k in answers or k in todo:
                continue
            if not p or not c:
                answers[k] = (None, "no report text for the " + ("prior" if not p else "current") + " study", False)
            elif (hit := self.cached(k)) is not None:
                answers[k] = (hit, None, False)
            else:
                todo[k] = b
        self.requests_sent = 0
        if todo:
            log.info("describer=llm: %d cached, %d to request from %s", len(answers), len(todo), self.endpoint)
            answers.update(asyncio.run(self._fetch_all(todo)))
        text, err, retry = ([answers[k][i] for k in keys] for i in range(3))
        return result(pairs, text, err, retry)

    async def _fetch_all(self, todo: dict[str, dict]) -> dict[str, Answer]:
        sem = asyncio.Semaphore(self.concurrency)
        self._connect_failures, self._tripped = 0, None
        async with httpx.AsyncClient(timeout=self.timeout_s, headers=self._headers(), trust_env=self.trust_env) as client:
            async def one(k: str, b: dict) -> tuple[str, Answer]:
                async with sem:
                    return k, await self._fetch(client, k, b)

            out = dict(await asyncio.gather(*(one(k, b) for k, b in todo.items())))
        if self._tripped:
            done = sum(v[0] is not None for v in out.values())
            raise LLMUnreachable(
                f"describer=llm: {self.endpoint} is unreachable ({self.circuit_breaker} connection failures in a row; "
                f"last: {self._tripped}). Stopped after {self.requests_sent} requests; {done} answers of this run are "
                "cached. Start the endpoint (or fix describer.endpoint) and run again.")
        return out

    async def _fetch(self, client: httpx.AsyncClient, key: str, body: dict) -> Answer:
        last = "no attempt"
        for attempt in range(self.max_retries + 1):
            if self._tripped:
                return None, f"endpoint unreachable: {self._tripped}", True
            if self.requests_sent >= self.request_budget:
                return None, (f"request budget ({self.request_budget}) exhausted after: {last}" if attempt else
                              f"request budget ({self.request_budget}) exhausted"), True
            self.requests_sent += 1
            retry_after = None
            try:
                r = await client.post(self.endpoint, json=body)
            except httpx.TransportError as e:
                last = f"{type(e).__name__}: {e}"
                if isinstance(e, (httpx.ConnectError, httpx.ConnectTimeout)):
                    self._connect_failures += 1
                    if self._connect_failures >= self.circuit_breaker:
                        self._tripped = last
                        return None, f"endpoint unreachable: {last}", True
            else:
                self._connect_failures = 0
                if r.status_code == 200:
                    try:
                        text = r.json()["choices"][0]["message"]["content"].strip()
                    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
                        return None, f"malformed chat-completions response ({type(e).__name__}): {r.text[:200]!r}", True
                    self._store(key, body, text)
                    return text, None, False
                last = f"HTTP {r.status_code}: {r.text[:200]!r}"
                if r.status_code not in RETRY_STATUS:
                    return None, last, False
                retry_after = _retry_after(r.headers.get("retry-after"))
            if attempt < self.max_retries:
                delay = min(self.backoff_max_s, self.backoff_s * 2 ** attempt) * (0.5 + random.random() / 2)
                await asyncio.sleep(min(self.backoff_max_s, retry_after) if retry_after is not None else delay)
        return None, f"gave up after {self.max_retries + 1} attempts; last: {last}", True


def _retry_after(v: str | None) -> float | None:
    try:
        return max(0.0, float(v)) if v is not None else None
    except ValueError:
        return None
