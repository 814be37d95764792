"""recaudit serve: a real HTTP server on 127.0.0.1; the openai adapter reproduces the served lists."""

from __future__ import annotations

import math
import threading
import time
from typing import Sequence

import numpy as np
import pytest
import requests

from audit.adapters.openai import OpenAIAdapter, OpenAIConfig
from audit.config import validate_config
from audit.interface import RecRequest, Recommender
from audit.prompts import default_prompts, load_prompt_set
from audit.serve import build_server, running_server

CATALOG = [
    "Godfather, The (1972)", "'Til There Was You (1997)", "Star Wars (1977)",
    "Dr. Strangelove or: How I Learned to Stop Worrying and Love the Bomb (1963)",
    "Shanghai Triad (Yao a yao yao dao waipo qiao) (1995)", "Heat (1995)", "12 Angry Men (1957)",
    "Wallace & Gromit: The Best of Aardman Animation (1996)", "Kolya (1996)", "Fargo (1996)",
]
REQS = [
    RecRequest(history=("Heat (1995)", "Godfather, The (1972)"), profile={"gender": "F", "age": "25-34"}),
    RecRequest(history=()),
    RecRequest(history=("Kolya (1996)",), candidates=("Fargo (1996)", "Heat (1995)", "Star Wars (1977)")),
    RecRequest(history=tuple(CATALOG[:6]), profile={"occupation": "writer"}),
]


class ToyRecommender(Recommender):
    """Deterministic lists from the request's content; optional delay to observe concurrency."""

    name = "toy"
    capabilities = frozenset({"generate", "token_logprobs", "complete"})

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.delay = delay

    def generate(self, reqs: Sequence[RecRequest], k: int) -> list[list[str]]:
        if self.delay:
            time.sleep(self.delay)
        out = []
        for r in reqs:
            if r.candidates:
                out.append(sorted(r.candidates)[:k])
            else:
                seed = len(r.history) * 7 + len(r.profile) * 3
                out.append([CATALOG[(seed + 3 * i) % len(CATALOG)] for i in range(k)])
        return out

    def token_logprobs(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [np.array([math.nan] + [-float(len(w)) for w in t.split()[1:]]) for t in texts]

    def complete(self, prompts: Sequence[str], max_new_tokens: int = 32) -> list[str]:
        return [p.upper()[:max_new_tokens] for p in prompts]


def adapter(base_url: str, **options) -> OpenAIAdapter:
    cfg = validate_config(OpenAIConfig, {"base_url": base_url, "model": "toy", "backoff": 0.01, **options}, "t")
    return OpenAIAdapter.build(cfg)


@pytest.mark.parametrize("mode", ["chat", "completions"])
@pytest.mark.parametrize("send_request", [False, True])
def test_openai_adapter_reproduces_the_served_lists(mode: str, send_request: bool) -> None:
    rec = ToyRecommender()
    with running_server(rec) as server:
        client = adapter(server.base_url, mode=mode, send_request=send_request)
        try:
            for k in (1, 5, 10):
                assert client.generate(REQS, k) == rec.generate(REQS, k)
        finally:
            client.close()
        assert server.stats["errors"] == 0 and server.stats["requests"] == 3 * len(REQS)


def test_numbered_answers_round_trip_for_plain_titles() -> None:
    class Plain(ToyRecommender):
        def generate(self, reqs, k):
            return [[f"Film Number {i} ({1990 + i})" for i in range(k)] for _ in reqs]

    rec = Plain()
    with running_server(rec, response_format="numbered") as server:
        body = requests.post(f"{server.base_url}/chat/completions", timeout=10, json={
            "model": "toy", "messages": list(default_prompts().render("generate", REQS[0], 2).messages)}).json()
        assert body["choices"][0]["message"]["content"] == "1. Film Number 0 (1990)\n2. Film Number 1 (1991)"
        assert adapter(server.base_url).generate(REQS, 4) == rec.generate(REQS, 4)


def test_custom_prompts_need_the_same_templates_on_both_sides() -> None:
    custom = {"generate": {"user": "Seen: {history_inline}. Now {k} more, please."}}
    rec = ToyRecommender()
    with running_server(rec, prompts=custom) as server:
        matching = adapter(server.base_url, prompts=custom)
        assert matching.generate(REQS[:2], 3) == rec.generate(REQS[:2], 3)
        mismatched = adapter(server.base_url)  # default templates: the server cannot read them
        gen = mismatched.generate_detailed(REQS[:1], 3)[0]
        assert gen.items == () and "[HTTP 400]" in gen.raw and "templates" in gen.raw
        assert mismatched.stats["failed_requests"] == 1


def test_models_health_and_unknown_routes() -> None:
    with running_server(ToyRecommender(), model_name="served-toy") as server:
        root = server.base_url.rsplit("/v1", 1)[0]
        models = requests.get(f"{server.base_url}/models", timeout=10).json()
        assert models["data"][0]["id"] == "served-toy"
        assert requests.get(f"{root}/health", timeout=10).json() == {"status": "ok"}
        assert requests.get(f"{root}/nowhere", timeout=10).status_code == 404
        assert requests.post(f"{server.base_url}/embeddings", json={}, timeout=10).status_code == 404


@pytest.mark.parametrize("body, message", [
    ({"messages": []}, "non-empty list"),
    ({"messages": [{"role": "user", "content": "Tell me a joke."}]}, "templates"),
    ({"messages": [{"role": "user", "content": "x"}], "recaudit": {"request": "nope"}}, "'recaudit' must be"),
])
def test_bad_chat_requests_answer_400_with_a_message(body: dict, message: str) -> None:
    with running_server(ToyRecommender()) as server:
        resp = requests.post(f"{server.base_url}/chat/completions", json=body, timeout=10)
        assert resp.status_code == 400 and message in resp.json()["error"]["message"]
        bad_json = requests.post(f"{server.base_url}/chat/completions", data=b"{nope", timeout=10)
        assert bad_json.status_code == 400 and "not valid JSON" in bad_json.json()["error"]["message"]
        assert server.stats["errors"] == 2


def test_yesno_prompts_are_refused_clearly() -> None:
    with running_server(ToyRecommender()) as server:
        prompt = default_prompts().render("yesno", REQS[0], 1, item="Heat (1995)")
        resp = requests.post(f"{server.base_url}/completions", json={"prompt": prompt.text}, timeout=10)
        assert resp.status_code == 400 and "yes/no" in resp.json()["error"]["message"]


def test_completions_batch_raw_completion_and_echo_logprobs() -> None:
    rec = ToyRecommender()
    with running_server(rec) as server:
        prompts = [default_prompts().render("generate", r, 3).text for r in REQS[:2]] + ["free text"]
        body = requests.post(f"{server.base_url}/completions", json={"prompt": prompts, "max_tokens": 4},
                             timeout=10).json()
        texts = [c["text"] for c in body["choices"]]
        assert texts[2] == "FREE"  # no template matched: the recommender's `complete`
        client = adapter(server.base_url, mode="completions", logprobs=True)
        assert client.capabilities == frozenset({"generate", "complete", "token_logprobs"})
        assert client.complete(["abc def"], max_new_tokens=3) == ["ABC"]
        lp = client.token_logprobs(["one three fives"])[0]
        assert np.isnan(lp[0]) and lp[1:].tolist() == [-5.0, -5.0]


def test_server_failure_in_the_recommender_is_a_500_not_a_crash() -> None:
    class Broken(ToyRecommender):
        def generate(self, reqs, k):
            raise RuntimeError("model exploded")

    with running_server(Broken()) as server:
        messages = list(default_prompts().render("generate", REQS[0], 2).messages)
        resp = requests.post(f"{server.base_url}/chat/completions", json={"messages": messages}, timeout=10)
        assert resp.status_code == 500 and "model exploded" in resp.json()["error"]["message"]
        assert requests.get(f"{server.base_url}/models", timeout=10).status_code == 200


@pytest.mark.parametrize("limit", [1, 3])
def test_adapter_concurrency_is_bounded(limit: int) -> None:
    with running_server(ToyRecommender(delay=0.05), serialize=False) as server:
        client = adapter(server.base_url, max_concurrency=limit)
        try:
            lists = client.generate(REQS * 3, 2)
        finally:
            client.close()
        assert len(lists) == 12
        assert server.stats["max_in_flight"] == limit  # reached, never exceeded


def test_build_server_binds_a_free_port_and_serves_until_shutdown() -> None:
    server = build_server(ToyRecommender(), port=0, prompts=load_prompt_set(None))
    port = server.server_address[1]
    assert port > 0 and server.base_url == f"http://127.0.0.1:{port}/v1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert requests.get(f"{server.base_url}/models", timeout=10).status_code == 200
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert not thread.is_alive()


@pytest.mark.slow
def test_serving_the_reference_model_reproduces_its_lists(tiny_dataset, tmp_path) -> None:
    reference = pytest.importorskip("audit.adapters.reference")
    from audit.build import build_recommender
    from audit.variants import BuildContext

    ctx = BuildContext(dataset=tiny_dataset, cache_dir=tmp_path / "cache", progress=False)
    rec = build_recommender("ref", {"adapter": "reference", "size": "tiny"}, ctx)  # trains on the tiny data set
    assert isinstance(rec, reference.ReferenceAdapter)
    reqs = [RecRequest(history=("Film Number 1 (1991)", "Film Number 2 (1992)")),
            RecRequest(history=("Film Number 5 (1995)",), profile={"gender": "F"})]
    with running_server(rec) as server:
        assert adapter(server.base_url, send_request=True).generate(reqs, 5) == rec.generate(reqs, 5)
