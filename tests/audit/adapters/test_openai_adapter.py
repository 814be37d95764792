"""The openai adapter against scripted HTTP servers on 127.0.0.1: retries with back-off,
endpoint errors naming the URL, API keys, garbage answers counted, not crashed on."""

from __future__ import annotations

import json
import socket
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest

from audit.adapters.openai import OpenAIAdapter, OpenAIConfig
from audit.build import build_recommender
from audit.config import validate_config
from audit.errors import ConfigError, EndpointError
from audit.interface import RecRequest
from audit.variants import BuildContext

REQ = RecRequest(history=("Heat (1995)",))
GOOD = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "1. Fargo (1996)\n2. Heat (1995)"}}]}


class Scripted(ThreadingHTTPServer):
    """Answers POSTs from ``script`` (a list of (status, body, headers)); then ``default``."""

    daemon_threads = True

    def __init__(self, script: list[tuple[int, object, dict]], default: tuple[int, object, dict]) -> None:
        super().__init__(("127.0.0.1", 0), _ScriptedHandler)
        self.script, self.default = list(script), default
        self.posts: list[dict] = []
        self.headers_seen: list[dict] = []
        self.lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _ScriptedHandler(BaseHTTPRequestHandler):
    server: Scripted
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _answer(self, status: int, body: object, headers: dict) -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        self._answer(200, {"data": [{"id": "scripted"}]}, {})

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.posts.append(body)
            self.server.headers_seen.append(dict(self.headers))
            status, payload, headers = self.server.script.pop(0) if self.server.script else self.server.default
        self._answer(status, payload, headers)


@contextmanager
def scripted(script: list[tuple[int, object, dict]], default=(200, GOOD, {})) -> Iterator[Scripted]:
    server = Scripted(script, default)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def make(base_url: str, **options) -> OpenAIAdapter:
    cfg = {"base_url": base_url, "model": "m", "backoff": 0.01, "backoff_max": 0.05, "max_retries": 3, **options}
    return OpenAIAdapter.build(validate_config(OpenAIConfig, cfg, "test"))


def test_429_twice_then_success_is_retried_and_counted() -> None:
    with scripted([(429, {"error": "slow down"}, {}), (429, {"error": "slow down"}, {})]) as server:
        rec = make(server.base_url)
        assert rec.generate([REQ], 5) == [["Fargo (1996)", "Heat (1995)"]]
        assert len(server.posts) == 3
        assert rec.stats["retries"] == 2 and rec.info["http"]["retries"] == 2


def test_5xx_answers_are_retried() -> None:
    with scripted([(503, "busy", {}), (502, "bad gateway", {})]) as server:
        rec = make(server.base_url)
        assert rec.generate([REQ], 2) == [["Fargo (1996)", "Heat (1995)"]]
        assert rec.stats["retries"] == 2


def test_retry_after_header_is_honoured() -> None:
    with scripted([(429, "wait", {"Retry-After": "0.3"})]) as server:
        rec = make(server.base_url, backoff_max=1.0)
        t0 = time.perf_counter()
        rec.generate([REQ], 2)
        assert time.perf_counter() - t0 >= 0.3


def test_always_500_raises_endpoint_error_after_max_retries() -> None:
    with scripted([], default=(500, "internal error", {})) as server:
        rec = make(server.base_url, max_retries=2)
        with pytest.raises(EndpointError) as err:
            rec.generate([REQ], 3)
        assert server.base_url in str(err.value) and "HTTP 500" in str(err.value)
        assert len(server.posts) == 3  # 1 try + 2 retries


def test_closed_port_raises_endpoint_error_quickly() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    t0 = time.perf_counter()
    with pytest.raises(EndpointError) as err:
        make(url, max_retries=2)  # the build-time check already fails
    assert url in str(err.value) and "connection failed" in str(err.value)
    assert time.perf_counter() - t0 < 5.0
    unchecked = make(url, max_retries=1, check=False)
    with pytest.raises(EndpointError, match=str(port)):
        unchecked.generate([REQ], 3)


@contextmanager
def slow_server(delay: float) -> Iterator[Scripted]:
    """A scripted server that sleeps ``delay`` s before each POST answer."""
    class Slow(_ScriptedHandler):
        def do_POST(self) -> None:  # noqa: N802
            time.sleep(delay)
            super().do_POST()

    server = Scripted([], (200, GOOD, {}))
    server.RequestHandlerClass = Slow
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_a_read_timeout_is_not_resent_and_names_the_settings_to_change() -> None:
    with slow_server(0.5) as server:
        rec = make(server.base_url, timeout=0.1, max_retries=3)
        with pytest.raises(EndpointError, match="timed out") as err:
            rec.generate([REQ], 2)
        for setting in ("timeout", "max_concurrency", "max_tokens"):
            assert setting in str(err.value)
        assert rec.stats["retries"] == 0 and rec.stats["failed_requests"] == 1
        time.sleep(0.7)  # the server records a POST after its delay
        assert len(server.posts) == 1  # the slow server got the request once
        resend = make(server.base_url, timeout=0.1, max_retries=1, retry_read_timeouts=True)
        with pytest.raises(EndpointError):
            resend.generate([REQ], 2)
        assert resend.stats["retries"] == 1


def test_failures_within_the_share_keep_the_answers_and_are_counted() -> None:
    script = [(500, "down", {})] * 3  # one request (1 try + 2 retries) fails for good
    with scripted(script) as server:
        rec = make(server.base_url, max_retries=2, max_concurrency=1, max_failure_share=0.25)
        gens = rec.generate_detailed([REQ] * 4, 2)
        assert [g.items for g in gens[1:]] == [("Fargo (1996)", "Heat (1995)")] * 3
        assert gens[0].items == () and gens[0].raw.startswith("[request failed]") and "HTTP 500" in gens[0].raw
        assert gens[0].failed is not None and "HTTP 500" in gens[0].failed
        assert all(g.failed is None for g in gens[1:])
        assert rec.stats["failed_requests"] == 1 and rec.stats["retries"] == 2 and rec.stats["requests"] == 1 + 6  # + the GET /models check


def test_past_the_failure_share_the_rest_is_cancelled_promptly() -> None:
    with scripted([], default=(503, "overloaded", {})) as server:
        rec = make(server.base_url, max_retries=2, backoff=0.2, backoff_max=0.2, max_concurrency=2,
                   max_failure_share=0.0, check=False)
        t0 = time.perf_counter()
        with pytest.raises(EndpointError, match="max_failure_share") as err:
            rec.generate([REQ] * 40, 2)
        assert time.perf_counter() - t0 < 3.0
        assert "1 of 40" in str(err.value) or "2 of 40" in str(err.value)
        sent = len(server.posts)
        assert sent <= 2 * 3 + 2  # at most the in-flight pair's attempts, never all 40 x 3
        rec.close()


def test_retry_after_as_an_http_date_is_honoured() -> None:
    import email.utils

    when = email.utils.formatdate(time.time() + 1.2, usegmt=True)
    with scripted([(429, "wait", {"Retry-After": when})]) as server:
        rec = make(server.base_url, backoff_max=5.0)
        t0 = time.perf_counter()
        assert rec.generate([REQ], 2) == [["Fargo (1996)", "Heat (1995)"]]
        assert time.perf_counter() - t0 >= 0.2  # an HTTP date has 1 s resolution


def test_default_max_tokens_fits_k_titles_and_an_explicit_one_wins() -> None:
    with scripted([]) as server:
        make(server.base_url).generate([REQ], 10)
        assert server.posts[-1]["max_tokens"] == 24 * 10 + 32
        make(server.base_url).generate([REQ], 3)
        assert server.posts[-1]["max_tokens"] == 24 * 3 + 32
        make(server.base_url, max_tokens=50).generate([REQ], 10)
        assert server.posts[-1]["max_tokens"] == 50


@pytest.mark.parametrize("status", [401, 404])
def test_auth_and_not_found_fail_at_once(status: int) -> None:
    with scripted([], default=(status, "nope", {})) as server:
        rec = make(server.base_url)
        with pytest.raises(EndpointError, match=f"HTTP {status}"):
            rec.generate([REQ], 2)
        assert len(server.posts) == 1


@pytest.mark.parametrize("payload", ["not json at all", {"choices": []}, {"weird": True},
                                     {"choices": [{"message": {"content": None}}]}])
def test_garbage_answers_give_empty_lists_and_are_counted(payload: object) -> None:
    with scripted([], default=(200, payload, {})) as server:
        rec = make(server.base_url)
        gens = rec.generate_detailed([REQ, REQ], 3)
        assert [g.items for g in gens] == [(), ()]
        assert rec.stats["garbage_responses"] == 2 and gens[0].raw.startswith("[HTTP 200]")
        assert all(g.failed is not None and "without a choice's text" in g.failed for g in gens)


def test_a_rejected_request_is_recorded_and_the_run_goes_on() -> None:
    with scripted([(400, {"error": {"message": "prompt too long"}}, {})]) as server:
        rec = make(server.base_url, max_concurrency=1)
        gens = rec.generate_detailed([REQ, REQ], 3)
        assert gens[0].items == () and "prompt too long" in gens[0].raw
        assert gens[0].failed is not None and "HTTP 400" in gens[0].failed and gens[1].failed is None
        assert gens[1].items == ("Fargo (1996)", "Heat (1995)")
        assert rec.stats["failed_requests"] == 1


def test_text_answers_are_parsed_and_truncated_to_k() -> None:
    answer = {"choices": [{"message": {"content": "Sure! Here are 3 movies you might like:\n"
                                                   "1. **Fargo** (1996) - dark comedy\n2. Heat\n3. Alien\n4. Extra"}}]}
    with scripted([], default=(200, answer, {})) as server:
        assert make(server.base_url).generate([REQ], 3) == [["Fargo (1996)", "Heat", "Alien"]]


def test_api_key_comes_from_the_named_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RECAUDIT_TEST_KEY", raising=False)
    with pytest.raises(ConfigError, match="RECAUDIT_TEST_KEY"):
        make("http://127.0.0.1:9/v1", api_key_env="RECAUDIT_TEST_KEY")
    monkeypatch.setenv("RECAUDIT_TEST_KEY", "sk-test-123")
    with scripted([]) as server:
        rec = make(server.base_url, api_key_env="RECAUDIT_TEST_KEY", extra_body={"seed": 7})
        rec.generate([REQ], 2)
        assert server.headers_seen[-1]["Authorization"] == "Bearer sk-test-123"
        body = server.posts[-1]
        assert body["model"] == "m" and body["temperature"] == 0.0 and body["seed"] == 7
        assert [m["role"] for m in body["messages"]] == ["system", "user"] and "recaudit" not in body
    with scripted([]) as server:
        make(server.base_url).generate([REQ], 2)
        assert "Authorization" not in server.headers_seen[-1]


def test_completions_mode_posts_the_plain_prompt() -> None:
    answer = {"choices": [{"text": "Fargo (1996)\nHeat (1995)"}]}
    with scripted([], default=(200, answer, {})) as server:
        rec = make(server.base_url, mode="completions")
        gen = rec.generate_detailed([REQ], 2)[0]
        assert gen.items == ("Fargo (1996)", "Heat (1995)")
        assert server.posts[-1]["prompt"] == gen.prompt and gen.prompt.startswith("A viewer watched")


def test_capabilities_depend_on_mode_and_logprobs() -> None:
    with scripted([]) as server:
        assert make(server.base_url).capabilities == frozenset({"generate"})
        assert make(server.base_url, mode="completions", logprobs=True).capabilities == \
            frozenset({"generate", "complete", "token-logprobs"})


def test_bad_base_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="base_url"):
        make("ftp://example/v1")


def test_build_through_registry_turns_unreachable_into_endpoint_error(tiny_dataset, tmp_path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = BuildContext(dataset=tiny_dataset, cache_dir=tmp_path)
    entry = {"adapter": "openai", "base_url": f"http://127.0.0.1:{port}/v1", "model": "m",
             "max_retries": 0}
    with pytest.raises(EndpointError, match=f"127.0.0.1:{port}"):
        build_recommender("served", entry, ctx)
