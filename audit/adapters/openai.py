"""The ``openai`` adapter: any OpenAI-compatible HTTP endpoint (vLLM, Ollama, llama.cpp's
server, hosted APIs, ``recaudit serve``) as a recommender.

Suite entry::

    served: {adapter: openai, base_url: "http://127.0.0.1:8000/v1", model: my-model,
             api_key_env: OPENAI_API_KEY, mode: chat, max_concurrency: 4}

Options (see :class:`OpenAIConfig`): ``api_key_env`` names the environment variable that
holds the key (sent as ``Authorization: Bearer``); leave it out for servers that need none.
A named variable that is not set is a ConfigError naming it. ``mode: chat`` posts the chat
form of the prompt (system + user) to ``/chat/completions``; ``mode: completions`` posts the
plain form to ``/completions``. ``temperature`` defaults to 0.
``extra_body`` is merged into every request body (e.g. ``{seed: 0}``); ``send_request: true``
adds the structured ``recaudit`` field that :mod:`audit.serve` reads (exact for any titles;
hosted APIs reject unknown fields, so it is off by default).

Reliability (on ``httpx``: one shared, thread-safe connection pool): at most
``max_concurrency`` requests are in flight. HTTP 408/409/425/429, 5xx and connection errors are
retried up to ``max_retries`` times with exponential back-off and jitter (``backoff * 2**attempt``
seconds, capped at ``backoff_max``, times a random factor in [0.5, 1]); a ``Retry-After`` header
(seconds or an HTTP date) is honoured up to ``backoff_max``. A **read time-out is not retried**
(``retry_read_timeouts: false``): on a generating server the abandoned request keeps running, so
sending it again only piles more work on a server that is already too slow; the request counts
as failed and its message names ``timeout``, ``max_concurrency`` and ``max_tokens``.
401/403/404 raise EndpointError at once (a key or model name to fix). 400/413/422 for one request
(e.g. a prompt too long) and answers without a usable ``choices`` entry are recorded, not raised.

Failed requests do not throw away the answers received: a failed request's list is ``[]``, its
raw text starts with ``[request failed]``, its ``Generation.failed`` names the cause (so probes
count it as a failed request, not as the model's empty answer), and ``info["http"]`` counts
requests, retries, failed requests and garbage answers. The call (and so the job) fails only when
more than ``max_failure_share`` of one batch's requests failed (default 0.1); the pending requests
are then cancelled at once (no new request is sent, retries stop) and EndpointError gives the
counts and the fix. ``max_tokens`` defaults to what ``k`` titles need (``tokens_per_title * k +
32``; 24 per title fits a numbered title with its year).

At build time ``check: true`` (default) asks ``GET /models`` once (with the same retries),
so an unreachable endpoint fails the build with EndpointError; a 404 there is fine.

Capabilities: ``generate`` always; ``complete`` in ``completions`` mode; ``token_logprobs``
only with ``logprobs: true`` (``/completions`` with ``echo: true, max_tokens: 0,
logprobs: 0``; the server's ``None`` for the first token becomes NaN).
"""

from __future__ import annotations

import email.utils
import math
import os
import random
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal, Sequence, TypeVar

import httpx
import numpy as np
from pydantic import Field

from audit.config import StrictConfig
from audit.errors import ConfigError, EndpointError
from audit.interface import Adapter, Generation, RecRequest
from audit.parsing import parse_item_list
from audit.prompts import PromptSet, load_prompt_set
from audit.variants import BuildContext

T = TypeVar("T")
RETRY_STATUS = frozenset({408, 409, 425, 429})
FATAL_STATUS = frozenset({401, 403, 404})
MAX_RAW_CHARS = 4000
FAILED_PREFIX = "[request failed]"


class OpenAIConfig(StrictConfig):
    """Options of the ``openai`` adapter (times in seconds)."""

    #: the API root, e.g. ``http://127.0.0.1:8000/v1`` (requests go to ``/chat/completions`` or ``/completions`` under it)
    base_url: str
    #: the model id the server expects in every request
    model: str
    #: the environment variable holding the API key (sent as ``Authorization: Bearer``); None = no key
    api_key_env: str | None = None
    #: ``chat``: the chat form of the prompt to ``/chat/completions``; ``completions``: the plain form to ``/completions``
    mode: Literal["chat", "completions"] = "chat"
    #: requests in flight at most
    max_concurrency: int = Field(4, ge=1, le=256)
    #: seconds a request may take (a read time-out fails the request; it is not resent)
    timeout: float = Field(60.0, gt=0)
    #: seconds to open a connection
    connect_timeout: float = Field(10.0, gt=0)
    #: retries of a request after HTTP 408/409/425/429, 5xx or a connection error
    max_retries: int = Field(4, ge=0, le=50)
    #: also resend a request whose reply timed out (off: the server keeps working on the abandoned one)
    retry_read_timeouts: bool = False
    #: seconds of the first retry's back-off (doubled each attempt, times a random factor in [0.5, 1])
    backoff: float = Field(0.5, ge=0)
    #: longest back-off, and the longest ``Retry-After`` honoured, in seconds
    backoff_max: float = Field(20.0, ge=0)
    #: the call (and its job) fails when more than this share of one batch's requests failed
    max_failure_share: float = Field(0.1, ge=0.0, le=1.0)
    #: sampling temperature sent with every request (0 = greedy where the server honours it)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    #: longest answer in tokens (None = ``tokens_per_title * k + 32``)
    max_tokens: int | None = Field(None, ge=1)
    #: tokens budgeted per title when ``max_tokens`` is None
    tokens_per_title: int = Field(24, ge=1)
    #: declare ``token-logprobs`` (``/completions`` with ``echo: true, max_tokens: 0, logprobs: 0``; the server must support it)
    logprobs: bool = False
    #: add the structured ``recaudit`` request field that ``recaudit serve`` reads (hosted APIs reject it)
    send_request: bool = False
    #: merged into every request body (e.g. ``{seed: 0}``)
    extra_body: dict[str, Any] = {}
    #: extra HTTP headers sent with every request
    headers: dict[str, str] = {}
    #: prompt templates: a YAML file (relative to the suite), a mapping of overrides, or ``{file: ..., **overrides}``
    #: (None = the packaged defaults)
    prompts: str | dict[str, Any] | None = None
    #: ask ``GET /models`` once at build time, so an unreachable endpoint fails the build (a 404 there is fine)
    check: bool = True
    #: seeds the retry jitter
    seed: int = 0


class HTTPResult:
    """One finished HTTP exchange: parsed JSON (or None) and the raw text."""

    def __init__(self, status: int, data: Any, text: str) -> None:
        self.status, self.data, self.text = status, data, text


class RequestFailed(Exception):
    """One request failed for good (retries spent, or a read time-out); the batch goes on."""


class _Cancelled(Exception):
    """The batch already failed: this request was not sent."""


class OpenAIAdapter(Adapter):
    """A recommender behind an OpenAI-compatible endpoint (see the module docstring)."""

    Config: ClassVar[type[StrictConfig]] = OpenAIConfig
    capabilities: frozenset[str] = frozenset({"generate", "complete", "token-logprobs"})
    kind: ClassVar[str] = "openai"

    def __init__(self, config: OpenAIConfig, prompts: PromptSet, api_key: str | None = None,
                 name: str = "openai") -> None:
        super().__init__()
        if not config.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"openai adapter: base_url must start with http:// or https://, "
                              f"got {config.base_url!r}")
        self.name = name
        self.config = config
        self.prompts = prompts
        self.base_url = config.base_url.rstrip("/")
        self._api_key = api_key
        caps = {"generate"}
        if config.mode == "completions":
            caps.add("complete")
        if config.logprobs:
            caps.add("token-logprobs")
        self.capabilities = frozenset(caps)
        self._lock = threading.Lock()
        self._rng = random.Random(config.seed)
        self._pool: ThreadPoolExecutor | None = None
        self._client: httpx.Client | None = None
        self._cancel = threading.Event()
        self.stats: dict[str, int] = {"requests": 0, "retries": 0, "failed_requests": 0,
                                      "garbage_responses": 0}
        self.info.update({"base_url": self.base_url, "model": config.model, "mode": config.mode,
                          "http": self.stats})

    @classmethod
    def build(cls, config: OpenAIConfig, ctx: BuildContext | None = None,
              training_variants: Sequence[Any] = ()) -> "OpenAIAdapter":
        """Read the key from ``api_key_env``, load prompts, and (``check``) reach the endpoint."""
        api_key = None
        if config.api_key_env:
            api_key = os.environ.get(config.api_key_env)
            if not api_key:
                raise ConfigError(f"openai adapter: environment variable {config.api_key_env!r} "
                                  "(api_key_env) is not set; export the API key there, or remove "
                                  "api_key_env if the server needs no key")
        base_dir = ctx.suite_dir if ctx is not None else None
        prompts = load_prompt_set(config.prompts, Path(base_dir) if base_dir else None)
        adapter = cls(config, prompts, api_key)
        if config.check:
            adapter.check_endpoint()
        return adapter

    # -- HTTP ---------------------------------------------------------------------------------
    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                headers = {"Content-Type": "application/json", **self.config.headers}
                if self._api_key:
                    headers["Authorization"] = f"Bearer {self._api_key}"
                n = self.config.max_concurrency
                self._client = httpx.Client(
                    headers=headers, trust_env=False,
                    timeout=httpx.Timeout(self.config.timeout, connect=min(self.config.connect_timeout,
                                                                           self.config.timeout)),
                    limits=httpx.Limits(max_connections=n + 1, max_keepalive_connections=n + 1))
            return self._client

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.stats[key] += n

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        cfg = self.config
        with self._lock:
            jitter = 0.5 + 0.5 * self._rng.random()
        delay = min(cfg.backoff_max, cfg.backoff * (2 ** attempt)) * jitter
        wait = _retry_after_seconds(retry_after)
        if wait is not None:
            delay = max(delay, min(wait, cfg.backoff_max))
        return delay

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> HTTPResult:
        """One call with retries. EndpointError when refused for good (401/403/404, a bad
        request); RequestFailed when retries are spent or a read timed out."""
        url = f"{self.base_url}/{path.lstrip('/')}"
        cfg = self.config
        last = "no attempt"
        for attempt in range(cfg.max_retries + 1):
            if self._cancel.is_set():
                raise _Cancelled()
            if attempt:
                self._count("retries")
            self._count("requests")
            retry_after = None
            try:
                resp = self._http().request(method, url, json=body)
            except httpx.ReadTimeout:
                last = (f"timed out: no answer within timeout={cfg.timeout:g} s (read). The server is "
                        f"slower than that at max_concurrency={cfg.max_concurrency} requests in flight "
                        f"with max_tokens={body.get('max_tokens') if body else None}; raise `timeout`, "
                        "lower `max_concurrency` or `max_tokens`")
                if not cfg.retry_read_timeouts:
                    raise RequestFailed(f"{url}: {last}") from None
            except httpx.TimeoutException as exc:
                last = f"timed out ({type(exc).__name__}) after {cfg.timeout:g} s"
            except httpx.TransportError as exc:
                last = f"connection failed ({type(exc).__name__}: {exc})"
            except httpx.HTTPError as exc:
                raise EndpointError(f"openai adapter: request to {url} failed: {exc}") from None
            else:
                status = resp.status_code
                if status < 400:
                    try:
                        data = resp.json()
                    except ValueError:
                        data = None
                    return HTTPResult(status, data, resp.text)
                snippet = resp.text[:300].replace("\n", " ")
                if status in FATAL_STATUS:
                    hint = (" (check the key in $" + cfg.api_key_env + ")"
                            if status in (401, 403) and cfg.api_key_env else
                            f" (check base_url and model {cfg.model!r})" if status == 404 else "")
                    raise EndpointError(f"openai adapter: {url} answered HTTP {status}{hint}: {snippet}")
                if status not in RETRY_STATUS and status < 500:
                    return HTTPResult(status, None, resp.text)
                last = f"HTTP {status}: {snippet}"
                retry_after = resp.headers.get("Retry-After")
            if attempt < cfg.max_retries:
                if self._cancel.wait(self._delay(attempt, retry_after)):
                    raise _Cancelled()
        raise RequestFailed(f"{url} kept failing after {cfg.max_retries + 1} attempt(s); last error: {last}")

    def check_endpoint(self) -> None:
        """GET /models once (with retries): EndpointError if the server cannot be reached."""
        try:
            result = self._request("GET", "models")
        except RequestFailed as exc:
            raise EndpointError(f"openai adapter: {exc}") from None
        except EndpointError as exc:
            if "HTTP 404" in str(exc):
                return
            raise
        if result.status == 200 and isinstance(result.data, dict):
            ids = [m.get("id") for m in result.data.get("data", []) if isinstance(m, dict)]
            self.info["served_models"] = ids

    def _map(self, fn: Callable[[Any], T], items: Sequence[Any], on_failure: Callable[[Any, str], T]) -> list[T]:
        """``fn`` over ``items`` with at most ``max_concurrency`` in flight, in order. A request
        that fails for good gives ``on_failure(item, message)``; past ``max_failure_share`` of
        failures the rest is cancelled and EndpointError raised."""
        items = list(items)
        allowed = int(self.config.max_failure_share * len(items) + 1e-9)
        failures: list[str] = []
        self._cancel.clear()

        def guarded(item: Any) -> T:
            try:
                return fn(item)
            except RequestFailed as exc:
                with self._lock:
                    self.stats["failed_requests"] += 1
                    failures.append(str(exc))
                    if len(failures) > allowed:
                        self._cancel.set()
                return on_failure(item, str(exc))
            except EndpointError:
                self._cancel.set()
                raise

        try:
            if len(items) <= 1 or self.config.max_concurrency == 1:
                out = []
                for x in items:
                    if self._cancel.is_set():
                        break
                    out.append(guarded(x))
            else:
                with self._lock:
                    if self._pool is None:
                        self._pool = ThreadPoolExecutor(max_workers=self.config.max_concurrency,
                                                        thread_name_prefix=f"recaudit-openai-{self.name}")
                    pool = self._pool
                futures: list[Future[T]] = [pool.submit(guarded, x) for x in items]
                out = []
                try:
                    for f in futures:
                        out.append(f.result())
                        if self._cancel.is_set():
                            break
                except BaseException:
                    self._cancel.set()
                    raise
                finally:
                    if self._cancel.is_set():
                        for f in futures:
                            f.cancel()
        except _Cancelled:
            pass
        if len(failures) > allowed:
            raise EndpointError(
                f"openai adapter: {len(failures)} of {len(items)} requests to {self.base_url} failed, more "
                f"than max_failure_share={self.config.max_failure_share:g} allows; the rest was cancelled. "
                f"First failure: {failures[0]}")
        return out

    def close(self) -> None:
        self._cancel.set()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._client is not None:
            self._client.close()
            self._client = None
        self._cancel.clear()

    # -- generate --------------------------------------------------------------------------------
    def _body(self, payload: dict[str, Any], k: int | None = None) -> dict[str, Any]:
        max_tokens = self.config.max_tokens or self.config.tokens_per_title * int(k or 10) + 32
        body = {"model": self.config.model, "temperature": self.config.temperature,
                "max_tokens": max_tokens, **payload}
        body.update(self.config.extra_body)
        return body

    def _prompt(self, job: tuple[RecRequest, int]) -> tuple[Any, str]:
        req, k = job
        prompt = self.prompts.render(self.prompts.task_for(req), req, k)
        return prompt, prompt.chat_text() if self.config.mode == "chat" else prompt.text

    def _generate_one(self, job: tuple[RecRequest, int]) -> Generation:
        req, k = job
        prompt, shown = self._prompt(job)
        extra = {"recaudit": {"task": prompt.task, "request": req.to_json(), "k": k}} if self.config.send_request else {}
        if self.config.mode == "chat":
            result = self._request("POST", "chat/completions",
                                   self._body({"messages": list(prompt.messages), **extra}, k))
            text = _choice_text(result.data, chat=True)
        else:
            result = self._request("POST", "completions", self._body({"prompt": prompt.text, **extra}, k))
            text = _choice_text(result.data, chat=False)
        if text is None:
            self._count("failed_requests" if result.status >= 400 else "garbage_responses")
            raw = f"[HTTP {result.status}] {result.text[:MAX_RAW_CHARS]}"
            why = (f"HTTP {result.status} from {self.base_url}" if result.status >= 400 else
                   f"HTTP {result.status} from {self.base_url} without a choice's text")
            return Generation(prompt=shown, raw=raw, items=(), failed=why)
        return Generation(prompt=shown, raw=text, items=tuple(parse_item_list(text, k)))

    def _failed_generation(self, job: tuple[RecRequest, int], message: str) -> Generation:
        return Generation(prompt=self._prompt(job)[1], raw=f"{FAILED_PREFIX} {message}", items=(), failed=message)

    def generate_detailed(self, reqs: Sequence[RecRequest], k: int) -> list[Generation]:
        """One HTTP request per recommendation request, ``max_concurrency`` at a time."""
        return self._map(self._generate_one, [(r, k) for r in reqs], self._failed_generation)

    def generate(self, reqs: Sequence[RecRequest], k: int) -> list[list[str]]:
        return [list(g.items) for g in self.generate_detailed(reqs, k)]

    # -- raw text ---------------------------------------------------------------------------------
    def complete(self, prompts: Sequence[str], max_new_tokens: int = 32) -> list[str]:
        if "complete" not in self.capabilities:
            raise self._missing("complete")

        def one(prompt: str) -> str:
            body = self._body({"prompt": prompt, "max_tokens": max_new_tokens})
            result = self._request("POST", "completions", body)
            text = _choice_text(result.data, chat=False)
            if text is None:
                self._count("failed_requests" if result.status >= 400 else "garbage_responses")
                return ""
            return text

        return self._map(one, list(prompts), lambda _p, _m: "")

    def token_logprobs(self, texts: Sequence[str]) -> list[np.ndarray]:
        if "token-logprobs" not in self.capabilities:
            raise self._missing("token-logprobs")

        def one(text: str) -> np.ndarray:
            body = self._body({"prompt": text, "max_tokens": 0, "echo": True, "logprobs": 0})
            result = self._request("POST", "completions", body)
            values = _echo_logprobs(result.data, len(text))
            if values is None:
                raise EndpointError(f"openai adapter: {self.base_url}/completions returned no echoed "
                                    "logprobs; the server does not support `echo` with `logprobs` "
                                    "(set logprobs: false)")
            return values

        def failed(_text: str, message: str) -> np.ndarray:
            return np.array([math.nan])

        return self._map(one, list(texts), failed)


def _choice_text(data: Any, chat: bool) -> str | None:
    """The first choice's text, or None when the answer has none."""
    if not isinstance(data, dict):
        return None
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    first = choices[0]
    if chat:
        msg = first.get("message")
        content = msg.get("content") if isinstance(msg, dict) else None
        if isinstance(content, list):  # content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        return content if isinstance(content, str) else None
    text = first.get("text")
    return text if isinstance(text, str) else None


def _echo_logprobs(data: Any, prompt_chars: int) -> np.ndarray | None:
    try:
        lp = data["choices"][0]["logprobs"]
        values = lp["token_logprobs"]
    except (KeyError, IndexError, TypeError):
        return None
    if not isinstance(values, list):
        return None
    offsets = lp.get("text_offset") if isinstance(lp, dict) else None
    if isinstance(offsets, list) and len(offsets) == len(values):
        values = [v for v, off in zip(values, offsets) if off < prompt_chars]
    return np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)



def _retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds: a number, or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
