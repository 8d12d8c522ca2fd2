"""describer=llm against a real HTTP server in this process that speaks chat-completions (429, 500, 400 included)."""
from __future__ import annotations

import pandas as pd
import pytest

from chat_server import FakeChatServer
from conftest import compose

from bjexp.data import describe
from bjexp.data.describe.llm import LLMConfigError, LLMDescriber


@pytest.fixture
def server():
    with FakeChatServer() as s:
        yield s


def pairs(currents: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"prior_report": ["IMPRESSION: small effusion."] * len(currents), "current_report": currents},
                        index=range(100, 100 + len(currents)))


def make(server, tmp_path, **kw) -> LLMDescriber:
    base = dict(endpoint=server.url, model="test-model", cache_dir=tmp_path / "llm", backoff_s=0.001,
                backoff_max_s=0.01, max_retries=3, concurrency=2)
    return LLMDescriber(**{**base, **kw})


def test_retries_429_and_500_then_caches(server, tmp_path, monkeypatch):
    monkeypatch.setenv("BJEXP_LLM_API_KEY", "sk-test-123")
    server.script = [429, 500]
    d = make(server, tmp_path)
    df = pairs(["A", "B", "A", ""])
    out = d(df)
    assert list(out.index) == list(df.index)
    assert out["text"].tolist() == ["CHANGE[A]", "CHANGE[B]", "CHANGE[A]", None]
    assert out["text_error"].tolist()[:3] == [None] * 3 and "no report text" in out["text_error"].iloc[3]
    assert len(server.requests) == 4  # 2 distinct prompts + one 429 + one 500 retried; the duplicate asked once
    assert d.requests_sent == 4
    assert all(h.get("Authorization") == "Bearer sk-test-123" for h in server.headers)
    assert server.requests[0]["model"] == "test-model" and server.requests[0]["messages"][0]["role"] == "system"
    # the cache holds the answers and never the key
    cached = list((tmp_path / "llm").rglob("*.json"))
    assert len(cached) == 2 and not any("sk-test-123" in p.read_text() for p in cached)
    # a rerun (a new process would do the same) pays nothing
    again = make(server, tmp_path)(df)
    assert again["text"].tolist() == out["text"].tolist() and len(server.requests) == 4
    # another model is another cache key
    make(server, tmp_path, model="other")(pairs(["A"]))
    assert len(server.requests) == 5


def test_failures_are_recorded_per_row_and_budget_resumes(server, tmp_path):
    d = make(server, tmp_path, max_retries=2)
    out = d(pairs(["ok1", "ALWAYS500", "BAD400"]))
    assert out["text"].tolist() == ["CHANGE[ok1]", None, None]
    assert out["text_error"].iloc[1].startswith("gave up after 3 attempts; last: HTTP 500")
    assert out["text_error"].iloc[2].startswith("HTTP 400")  # not retried
    assert len(server.requests) == 1 + 3 + 1
    # budget: 2 requests for 4 new prompts -> 2 answered, 2 failed with the reason; a rerun finishes the rest
    n0 = len(server.requests)
    d = make(server, tmp_path, request_budget=2, concurrency=1)
    out = d(pairs(["n1", "n2", "n3", "n4"]))
    assert out["text"].notna().sum() == 2 and len(server.requests) - n0 == 2
    assert out["text_error"].dropna().str.contains("request budget \\(2\\) exhausted").all()
    out = make(server, tmp_path)(pairs(["n1", "n2", "n3", "n4"]))
    assert out["text"].tolist() == ["CHANGE[n1]", "CHANGE[n2]", "CHANGE[n3]", "CHANGE[n4]"]
    assert len(server.requests) - n0 == 4


def test_concurrency_is_bounded(server, tmp_path):
    make(server, tmp_path, concurrency=3)(pairs([f"c{i}" for i in range(24)]))
    assert len(server.requests) == 24 and 1 <= server.max_in_flight <= 3


def test_endpoint_must_be_explicit(tmp_path):
    cfg = compose(["describer=llm", f"paths.cache_dir={tmp_path}"])
    with pytest.raises(LLMConfigError, match="describer.endpoint is not set.*MIMIC"):
        describe.build(cfg.describer, cfg.paths.cache_dir)
    cfg = compose(["describer=llm", "describer.endpoint=api.example.com", "describer.model=m"])
    with pytest.raises(LLMConfigError, match="full URL"):
        describe.build(cfg.describer, tmp_path)


def test_composed_config_builds_the_describer(server, tmp_path):
    cfg = compose(["describer=llm", f"describer.endpoint={server.url}", "describer.model=m", "describer.auth=api-key",
                   "describer.api_key_env=MY_KEY", f"paths.cache_dir={tmp_path}"])
    d = describe.build(cfg.describer, cfg.paths.cache_dir)
    assert isinstance(d, LLMDescriber) and d.cache_dir == tmp_path / "llm"
    assert d(pairs(["x"]))["text"].tolist() == ["CHANGE[x]"]
    assert "api-key" not in {k.lower() for k in server.headers[0]}  # MY_KEY unset: no auth header sent
