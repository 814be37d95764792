"""recaudit serve: a real HTTP server on 127.0.0.1; the openai adapter reproduces the served lists."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
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
    capabilities = frozenset({"generate", "token-logprobs", "complete"})

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
        assert client.capabilities == frozenset({"generate", "complete", "token-logprobs"})
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
    with running_server(rec, model_name="toy") as server:  # the name the `adapter` fixture asks for
        assert adapter(server.base_url, send_request=True).generate(reqs, 5) == rec.generate(reqs, 5)


# -- the OpenAI wire format, through the official client ----------------------------------------
def _messages(req: RecRequest = REQS[0], k: int = 3) -> list[dict]:
    return list(default_prompts().render("generate", req, k).messages)


class WordTokenizer:
    """A stand-in tokenizer (``encode``/``decode``) splitting on spaces: one token per word."""

    def encode(self, text: str, add_special_tokens: bool = False) -> list[str]:
        return text.split(" ") if text else []

    def decode(self, ids: list[str]) -> str:
        return " ".join(ids)


def test_official_client_streams_chunks_and_plain_answers_validate() -> None:
    openai = pytest.importorskip("openai")
    rec = ToyRecommender()
    with running_server(rec, model_name="toy") as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)
        expected = json.dumps(rec.generate(REQS[:1], 3)[0])
        chunks = list(client.chat.completions.create(model="toy", messages=_messages(), stream=True))
        assert len(chunks) > 2 and chunks[0].choices[0].delta.role == "assistant"
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected
        assert chunks[-1].choices[0].finish_reason == "stop"
        plain = client.chat.completions.create(model="toy", messages=_messages(), n=3)
        assert [c.message.content for c in plain.choices] == [expected] * 3
        assert [c.index for c in plain.choices] == [0, 1, 2]
        prompt = default_prompts().render("generate", REQS[0], 3).text
        texts = list(client.completions.create(model="toy", prompt=prompt, stream=True))
        assert "".join(c.choices[0].text for c in texts) == expected
        assert client.models.retrieve("toy").id == "toy"
        assert [m.id for m in client.models.list()] == ["toy"]
        with pytest.raises(openai.NotFoundError) as err:
            client.chat.completions.create(model="gpt-4o", messages=_messages())
        assert err.value.status_code == 404 and err.value.code == "model_not_found"
        with pytest.raises(openai.NotFoundError):
            client.models.retrieve("gpt-4o")


def test_raw_stream_ends_with_done_and_carries_usage_when_asked() -> None:
    rec = ToyRecommender()
    with running_server(rec, tokenizer=WordTokenizer()) as server:
        resp = requests.post(f"{server.base_url}/chat/completions", timeout=10, stream=True, json={
            "model": "toy", "messages": _messages(), "stream": True, "stream_options": {"include_usage": True}})
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = [line[len("data: "):] for line in resp.iter_lines(decode_unicode=True) if line]
        assert events[-1] == "[DONE]"
        last = json.loads(events[-2])
        text = json.dumps(rec.generate(REQS[:1], 3)[0])
        prompt_words = sum(len(m["content"].split(" ")) for m in _messages())
        assert last["choices"] == [] and last["usage"] == {
            "prompt_tokens": prompt_words, "completion_tokens": len(text.split(" ")),
            "total_tokens": prompt_words + len(text.split(" "))}
        plain = requests.post(f"{server.base_url}/chat/completions", timeout=10,
                              json={"messages": _messages(), "max_tokens": 2}).json()
        choice = plain["choices"][0]
        assert choice["message"]["content"] == " ".join(text.split(" ")[:2]) and choice["finish_reason"] == "length"
        assert plain["usage"]["completion_tokens"] == 2
    with running_server(rec) as server:  # no tokenizer: no made-up token counts
        body = requests.post(f"{server.base_url}/chat/completions", timeout=10, json={"messages": _messages()}).json()
        assert body["usage"] is None


def test_content_as_a_list_of_text_parts_is_read() -> None:
    rec = ToyRecommender()
    with running_server(rec) as server:
        messages = _messages()
        text = messages[-1]["content"]
        messages[-1]["content"] = [{"type": "text", "text": text[:10]}, {"type": "text", "text": text[10:]}]
        body = requests.post(f"{server.base_url}/chat/completions", timeout=10, json={"messages": messages}).json()
        assert body["choices"][0]["message"]["content"] == json.dumps(rec.generate(REQS[:1], 3)[0])
        messages[-1]["content"] = [{"type": "image_url", "image_url": {"url": "x"}}]
        resp = requests.post(f"{server.base_url}/chat/completions", timeout=10, json={"messages": messages})
        assert resp.status_code == 400 and "only text parts" in resp.json()["error"]["message"]


@pytest.mark.parametrize("body, status, param", [
    ({"messages": "hi"}, 400, "messages"),
    ({"messages": [{"content": "x"}]}, 400, "messages"),
    ({"messages": [{"role": "user", "content": 3}]}, 400, "messages"),
    ({"messages": [{"role": "user", "content": "x"}], "n": 0}, 400, "n"),
    ({"messages": [{"role": "user", "content": "x"}], "n": "2"}, 400, "n"),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": -1}, 400, "max_tokens"),
    ({"messages": [{"role": "user", "content": "x"}], "stream": "yes"}, 400, "stream"),
    ({"messages": [{"role": "user", "content": "x"}], "temperature": 9}, 400, "temperature"),
    ({"messages": [{"role": "user", "content": "x"}], "model": 7}, 400, "model"),
    ({"messages": [{"role": "user", "content": "x"}], "model": "other"}, 404, "model"),
    ({"prompt": 5}, 400, "prompt"),
])
def test_malformed_fields_answer_4xx_in_the_openai_error_shape(body: dict, status: int, param: str) -> None:
    path = "completions" if "prompt" in body else "chat/completions"
    with running_server(ToyRecommender()) as server:
        resp = requests.post(f"{server.base_url}/{path}", json=body, timeout=10)
        error = resp.json()["error"]
        assert resp.status_code == status and error["param"] == param
        assert set(error) == {"message", "type", "param", "code"} and error["message"]


def _raw_exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes, read until the server closes or goes quiet."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except socket.timeout:
            pass
    return out


@pytest.mark.parametrize("length", [b"abc", b"-1", b"1e3"])
def test_malformed_content_length_is_a_4xx_and_blocks_nothing(length: bytes) -> None:
    with running_server(ToyRecommender()) as server:
        port = server.server_address[1]
        head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: " + length + b"\r\n\r\n{}")
        t0 = time.perf_counter()
        answer = _raw_exchange(port, head, timeout=3)
        assert re.match(rb"HTTP/1.1 4\d\d ", answer), answer[:80]
        assert time.perf_counter() - t0 < 3
        assert requests.get(f"{server.base_url}/models", timeout=5).status_code == 200


def test_oversize_body_is_413_and_its_rest_is_never_read_as_a_request() -> None:
    with running_server(ToyRecommender(), max_body_bytes=1000) as server:
        port = server.server_address[1]
        smuggled = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
        body = b"x" * 1500 + smuggled  # inside the declared body: must never be served as a request
        declared = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: "
                    + str(len(body)).encode() + b"\r\n\r\n" + body)
        answer = _raw_exchange(port, declared)
        assert answer.startswith(b"HTTP/1.1 413 ") and answer.count(b"HTTP/1.1") == 1
        chunked = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                   + b"%x\r\n" % 1500 + b"y" * 1500 + b"\r\n0\r\n\r\n")
        answer = _raw_exchange(port, chunked)
        assert answer.startswith(b"HTTP/1.1 413 ") and b"over 1000 bytes" in answer


def test_chunked_bodies_are_read() -> None:
    rec = ToyRecommender()
    with running_server(rec) as server:
        payload = json.dumps({"messages": _messages()}).encode()
        gen = (payload[i:i + 50] for i in range(0, len(payload), 50))  # requests sends a generator chunked
        resp = requests.post(f"{server.base_url}/chat/completions", data=gen, timeout=10,
                             headers={"Content-Type": "application/json"})
        assert resp.status_code == 200
        assert resp.json()["choices"][0]["message"]["content"] == json.dumps(rec.generate(REQS[:1], 3)[0])


def test_bearer_auth_when_a_key_is_set() -> None:
    with running_server(ToyRecommender(), api_key="s3cret") as server:
        url = f"{server.base_url}/chat/completions"
        assert requests.post(url, json={"messages": _messages()}, timeout=10).status_code == 401
        wrong = requests.post(url, json={"messages": _messages()}, timeout=10, headers={"Authorization": "Bearer no"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
        assert requests.get(f"{server.base_url}/models", timeout=10).status_code == 401
        ok = requests.post(url, json={"messages": _messages()}, timeout=10, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert requests.get(server.base_url.rsplit("/v1", 1)[0] + "/health", timeout=10).status_code == 200


def test_a_slow_recommender_times_out_with_504_and_the_server_keeps_answering() -> None:
    with running_server(ToyRecommender(delay=1.0), request_timeout=0.2, serialize=False) as server:
        resp = requests.post(f"{server.base_url}/chat/completions", json={"messages": _messages()}, timeout=10)
        assert resp.status_code == 504 and resp.json()["error"]["code"] == "timeout"
        assert requests.get(f"{server.base_url}/models", timeout=5).status_code == 200


def test_sigterm_stops_gracefully_and_closes_the_recommender(tmp_path) -> None:
    marker = tmp_path / "closed"
    script = tmp_path / "serve_one.py"
    script.write_text(
        "import sys\n"
        "from audit.interface import Recommender\n"
        "from audit.serve import serve\n"
        "class Rec(Recommender):\n"
        "    name = 'closing'\n"
        "    capabilities = frozenset({'generate'})\n"
        "    def generate(self, reqs, k):\n"
        "        return [['A (2000)'] for _ in reqs]\n"
        "    def close(self):\n"
        f"        open({str(marker)!r}, 'w').write('closed')\n"
        "serve(Rec(), port=int(sys.argv[1]))\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, str(script), str(port)], cwd=str(Path(__file__).resolve().parents[2]),
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=20)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert marker.read_text() == "closed"
    assert "recaudit serve: stopped (SIGTERM) after" in stderr and "recommender closed" in stderr


# -- against a server nobody here wrote: `transformers serve` -----------------------------------
def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the server exited: {log.read_text()[-3000:]}"
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    pytest.fail(f"{url} not up in {seconds:g} s: {log.read_text()[-3000:]}")


@pytest.mark.slow
def test_transformers_serve_and_recaudit_serve_give_the_same_lists(smollm2_dir: Path, tiny_dataset,
                                                                   tmp_path: Path, recaudit_home: Path) -> None:
    """The openai adapter against `transformers serve` (SmolLM2-135M-Instruct on 127.0.0.1), and
    against `recaudit serve` in front of the `hf` adapter on the same directory: hallucination and
    fairness on 2 users, greedy, the same max_tokens; the parsed lists agree call by call."""
    pytest.importorskip("fastapi")
    import runner_testkit as kit

    from audit.build import build_recommender
    from audit.runner import run_suite_file
    from audit.variants import BuildContext

    binary = Path(sys.executable).parent / "transformers"
    if not binary.exists():
        pytest.skip("the `transformers` command (transformers[serving]) is not installed")
    port = _free_port_here()
    log = tmp_path / "transformers-serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "2"}
    with log.open("w") as out:
        proc = subprocess.Popen([str(binary), "serve", str(smollm2_dir), "--host", "127.0.0.1", "--port", str(port),
                                 "--device", "cpu", "--dtype", "float32", "--log-level", "warning"],
                                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    max_tokens = 48
    hf = build_recommender("llm", {"adapter": "hf", "path": str(smollm2_dir), "history": 1000,
                                   "max_new_tokens": max_tokens, "batch_size": 1},
                           BuildContext(dataset=tiny_dataset, cache_dir=tmp_path / "cache", progress=False))
    try:
        _wait_healthy(f"http://127.0.0.1:{port}/health", proc, log, 240)
        with running_server(hf, model_name="smollm2") as ours:
            common = {"adapter": "openai", "max_tokens": max_tokens, "temperature": 0.0, "max_concurrency": 2,
                      "timeout": 600, "max_retries": 1}
            spec = {"name": "third-party", "dataset": {"users": 2, "seed": 0},
                    "recommenders": {
                        "transformers-serve": {**common, "base_url": f"http://127.0.0.1:{port}/v1",
                                               "model": str(smollm2_dir)},
                        "recaudit-serve+hf": {**common, "base_url": ours.base_url, "model": "smollm2"}},
                    "probes": {"hallucination": {"k": 3},
                               "fairness": {"attributes": [["gender"]], "k": 3, "bootstrap": 100,
                                            "permutations": 0, "min_group_users": 1}}}
            run = run_suite_file(kit.write_suite(tmp_path / "suite", spec, dataset=tiny_dataset),
                                 out=tmp_path / "report", no_cache=True)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        hf.close()
    statuses = {(r["recommender"], r["probe"]): r["status"] for r in run.report["results"]}
    assert all(s in ("pass", "fail") for s in statuses.values()), (statuses, [r.get("reason") for r in run.report["results"]])
    info = {r["name"]: r["info"] for r in run.report["recommenders"]}
    assert info["transformers-serve"]["http"]["failed_requests"] == 0
    lines = [json.loads(x) for x in (tmp_path / "report" / "outputs.jsonl").read_text().splitlines()]
    by_rec: dict[str, dict[tuple, list]] = {}
    for rec in lines:
        by_rec.setdefault(rec["recommender"], {})[(rec["probe"], rec["user"], rec["condition"])] = rec["parsed"]
    theirs, ours_lists = by_rec["transformers-serve"], by_rec["recaudit-serve+hf"]
    assert set(theirs) == set(ours_lists) and len(theirs) >= 2 + 2 * 3
    assert theirs == ours_lists
    assert any(theirs.values())  # the model did name films


def _free_port_here() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_past_the_request_limit_the_503_has_the_openai_error_shape_and_a_retry_after() -> None:
    with running_server(ToyRecommender(delay=0.6), serialize=False, max_connections=2) as server:
        url = f"{server.base_url}/chat/completions"
        answers: list[requests.Response] = []

        def post() -> None:
            answers.append(requests.post(url, json={"messages": _messages()}, timeout=10))

        threads = [threading.Thread(target=post) for _ in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        codes = sorted(r.status_code for r in answers)
        assert codes.count(200) >= 2 and 503 in codes, codes
        busy = next(r for r in answers if r.status_code == 503)
        assert busy.json()["error"]["code"] == "server_busy" and "max_connections" in busy.json()["error"]["message"]
        assert busy.headers["Retry-After"] == "1"
        assert requests.post(url, json={"messages": _messages()}, timeout=10).status_code == 200


def test_a_client_that_sends_its_body_too_slowly_gets_408_and_frees_its_slot() -> None:
    with running_server(ToyRecommender(), body_timeout=0.5, max_connections=1) as server:
        port = server.server_address[1]
        head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100\r\n\r\n{\"messages\"")  # 11 of the 100 bytes, then silence
        t0 = time.perf_counter()
        answer = _raw_exchange(port, head, timeout=5)
        assert answer.startswith(b"HTTP/1.1 408 ") and b"body_timeout" in answer, answer[:200]
        assert time.perf_counter() - t0 < 4
        resp = requests.post(f"{server.base_url}/chat/completions", json={"messages": _messages()}, timeout=10)
        assert resp.status_code == 200
