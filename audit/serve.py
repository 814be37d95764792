"""An OpenAI-compatible HTTP server for any :class:`Recommender` (``recaudit serve``), on
Starlette + Uvicorn.

Endpoints:

- ``GET /v1/models`` and ``GET /v1/models/{id}``: one model, named ``model_name`` (default: the
  recommender's name); another id answers 404 (``model_not_found``);
- ``POST /v1/chat/completions``: the last ``user`` message is the prompt (content a string or a
  list of ``{"type": "text", "text": ...}`` parts);
- ``POST /v1/completions``: ``prompt`` is a string or a list of strings;
- ``GET /health``: ``{"status": "ok"}`` (never needs the API key).

Request fields honoured: ``model`` (checked against the served name: 404 otherwise; may be left
out), ``stream`` (server-sent events in the OpenAI chunk format, ending with ``data: [DONE]``;
``stream_options.include_usage`` adds the usage chunk), ``n`` (1-16 choices; the recommender is
asked once per choice), ``max_tokens`` / ``max_completion_tokens`` (the answer is cut to that many
tokens, ``finish_reason: "length"``; tokens are the tokenizer's when the server has one, else
words and punctuation marks). ``temperature``, ``top_p`` and ``seed`` are validated and not
applied: the recommender interface decodes its own way. ``usage`` counts tokens only when the
server was given a tokenizer (``tokenizer=`` / ``--tokenizer DIR``); otherwise it is ``null``.

How a prompt becomes a :class:`RecRequest` (in this order):

1. **structured**: the non-standard field ``"recaudit": {"request": {history, profile,
   candidates, user}, "k": K}`` (the ``openai`` adapter sends it with ``send_request: true``).
2. **template inversion**: the prompt is matched against the server's prompt templates
   (:meth:`audit.prompts.PromptSet.parse`), which recovers history, profile, candidates and k.
3. **raw completion**: a ``/v1/completions`` prompt that matches no template goes to the
   recommender's ``complete`` when it has that capability; ``echo: true`` with
   ``max_tokens: 0`` and ``logprobs`` returns its ``token_logprobs`` (``tokens`` are empty strings).

Answers are the recommender's list as a JSON array of titles (``response_format="json"``) or a
numbered list (``"numbered"``).

Robustness: every malformed request (bad JSON, wrong types, unknown model or route, a body over
``max_body_bytes``, a missing or wrong bearer key) answers a 4xx with the OpenAI error shape
``{"error": {"message", "type", "param", "code"}}``; bad framing (a non-numeric or negative
``Content-Length``) is refused by Uvicorn's HTTP parser with a 400 before it reaches the app.
Chunked bodies are read. Calls into the recommender run in worker threads, one at a time when
``serialize`` (models are rarely thread-safe), each bounded by ``request_timeout`` (504 after it;
the abandoned call finishes in its thread); a request body must arrive within ``body_timeout``
(408 after it, so a client that sends slowly cannot hold a slot); ``max_connections`` caps the
requests in progress (503 with the OpenAI error shape and ``Retry-After: 1`` past it; Uvicorn's
own connection cap sits at four times that as a backstop); idle keep-alive connections close
after 5 s. SIGINT/SIGTERM stop accepting, let requests in
progress finish (up to 10 s) and then :func:`serve` closes the recommender.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import signal
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterator, Literal, Mapping, Sequence

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from audit.interface import RecRequest, Recommender
from audit.prompts import PromptSet, default_prompts, load_prompt_set

log = logging.getLogger(__name__)

ResponseFormat = Literal["json", "numbered"]
MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_N = 16
_PIECES = re.compile(r"\w+|[^\w\s]")


class BadRequest(Exception):
    """A client error: answered with ``status`` (default 400) and the OpenAI error shape."""

    def __init__(self, message: str, status: int = 400, *, param: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.param, self.code = status, param, code


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """The OpenAI error shape."""
    kind = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
            429: "rate_limit_error"}.get(status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code or str(status)}}


def _error(status: int, message: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, param, code), status_code=status)


class RequestLimit:
    """ASGI middleware: at most ``limit`` HTTP requests in progress; one more gets a 503 in the
    OpenAI error shape with ``Retry-After: 1`` (Uvicorn's own ``limit_concurrency`` answers
    plain text, which OpenAI clients cannot read)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit, self.active = app, int(limit), 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.active >= self.limit:
            response = _error(503, f"the server is at its limit of {self.limit} requests in progress "
                                   "(max_connections); retry shortly", code="server_busy")
            response.headers["Retry-After"] = "1"
            await response(scope, receive, send)
            return
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1


# -- tokens -------------------------------------------------------------------------------------
class Tokens:
    """Token counting and cutting: a tokenizer's (``encode``/``decode``) or words and marks."""

    def __init__(self, tokenizer: Any = None) -> None:
        if isinstance(tokenizer, (str, Path)):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer), local_files_only=True)
        self.tokenizer = tokenizer

    @property
    def exact(self) -> bool:
        return self.tokenizer is not None

    def count(self, text: str) -> int:
        if self.tokenizer is not None:
            return len(self.tokenizer.encode(text, add_special_tokens=False))
        return len(_PIECES.findall(text))

    def cut(self, text: str, limit: int) -> tuple[str, bool]:
        """``text`` cut to ``limit`` tokens and whether it was cut."""
        if self.tokenizer is not None:
            ids = self.tokenizer.encode(text, add_special_tokens=False)
            if len(ids) <= limit:
                return text, False
            return self.tokenizer.decode(ids[:limit]), True
        spans = [m.end() for m in _PIECES.finditer(text)]
        if len(spans) <= limit:
            return text, False
        return (text[:spans[limit - 1]] if limit else ""), True


# -- request validation -------------------------------------------------------------------------
def _int_field(body: Mapping[str, Any], name: str, default: int | None, lo: int, hi: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"'{name}' must be an integer, got {type(value).__name__}", param=name)
    if value < lo or (hi is not None and value > hi):
        bounds = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
        raise BadRequest(f"'{name}' must be {bounds}, got {value}", param=name)
    return value


def _number_field(body: Mapping[str, Any], name: str, lo: float, hi: float) -> None:
    value = body.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise BadRequest(f"'{name}' must be a number between {lo:g} and {hi:g}, got {value!r}", param=name)


def _content_text(content: Any, where: str) -> str | None:
    """A message's content as text: a string, a list of text parts, or None."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, Mapping) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise BadRequest(f"{where}: content parts must be {{\"type\": \"text\", \"text\": \"...\"}}; "
                                 "only text parts are served", param="messages")
            texts.append(part["text"])
        return "".join(texts)
    raise BadRequest(f"{where}: 'content' must be a string or a list of text parts, "
                     f"got {type(content).__name__}", param="messages")


def _structured(extra: Any) -> tuple[RecRequest, int]:
    if not isinstance(extra, Mapping) or not isinstance(extra.get("request"), Mapping):
        raise BadRequest("'recaudit' must be {\"request\": {history, profile, candidates}, \"k\": K}",
                         param="recaudit")
    r = extra["request"]
    try:
        req = RecRequest(history=tuple(str(t) for t in r.get("history", ())),
                         profile={str(a): str(v) for a, v in dict(r.get("profile") or {}).items()},
                         candidates=tuple(str(t) for t in r.get("candidates", ())),
                         user=None if r.get("user") is None else str(r["user"]))
        k = extra.get("k", 10)
        if isinstance(k, bool) or not isinstance(k, int):
            raise TypeError(f"'k' must be an integer, got {k!r}")
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"malformed 'recaudit' request: {exc}", param="recaudit") from None
    if k < 0:
        raise BadRequest(f"'recaudit.k' must be >= 0, got {k}", param="recaudit")
    return req, k


@dataclass
class _Answer:
    texts: list[str]
    finish: list[str]
    logprobs: list[dict[str, Any] | None]


# -- the application ----------------------------------------------------------------------------
class RecommenderApp:
    """The ASGI application (``.app``) answering OpenAI-style requests from one recommender."""

    def __init__(self, recommender: Recommender, *, model_name: str | None = None,
                 prompts: PromptSet | None = None, response_format: ResponseFormat = "json",
                 serialize: bool = True, max_body_bytes: int = MAX_BODY_BYTES,
                 request_timeout: float = 300.0, api_key: str | None = None, tokenizer: Any = None,
                 max_workers: int = 16, body_timeout: float = 30.0) -> None:
        if response_format not in ("json", "numbered"):
            raise ValueError(f"response_format must be 'json' or 'numbered', got {response_format!r}")
        self.recommender = recommender
        self.model_name = model_name or recommender.name
        self.prompts = prompts or default_prompts()
        self.response_format = response_format
        self.max_body_bytes = int(max_body_bytes)
        self.request_timeout = float(request_timeout)
        self.body_timeout = float(body_timeout)
        self._api_key = api_key
        self.tokens = Tokens(tokenizer)
        self._limiter = anyio.CapacityLimiter(1 if serialize else max_workers)
        self.stats: dict[str, int] = {"requests": 0, "errors": 0, "in_flight": 0, "max_in_flight": 0}
        self.created = int(time.time())
        routes = [Route("/health", self.health, methods=["GET"])]
        for prefix in ("/v1", ""):
            routes += [Route(f"{prefix}/models", self.models, methods=["GET"]),
                       Route(f"{prefix}/models/{{model_id:path}}", self.model, methods=["GET"]),
                       Route(f"{prefix}/chat/completions", self.chat, methods=["POST"]),
                       Route(f"{prefix}/completions", self.completions, methods=["POST"])]
        self.app = Starlette(routes=routes, exception_handlers={HTTPException: self._http_error,
                                                                Exception: self._crash})

    # -- plumbing ------------------------------------------------------------------------------
    async def _http_error(self, request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 400)
        what = {404: f"no route {request.method} {request.url.path}",
                405: f"method {request.method} is not allowed on {request.url.path}"}.get(status, str(exc))
        return _error(status, what)

    async def _crash(self, request: Request, exc: Exception) -> Response:
        log.error("recaudit serve: %s %s failed: %r", request.method, request.url.path, exc)
        return _error(500, f"{type(exc).__name__}: {exc}")

    def _authorized(self, request: Request) -> bool:
        if self._api_key is None:
            return True
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self._api_key.encode())

    async def _json(self, request: Request) -> dict[str, Any]:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise BadRequest(f"request body over {self.max_body_bytes} bytes", 413)
        raw = bytearray()
        try:
            with anyio.fail_after(self.body_timeout):
                async for chunk in request.stream():
                    raw += chunk
                    if len(raw) > self.max_body_bytes:
                        raise BadRequest(f"request body over {self.max_body_bytes} bytes", 413)
        except TimeoutError:
            raise BadRequest(f"the request body did not arrive within {self.body_timeout:g} s (body_timeout)",
                             408, code="timeout") from None
        try:
            body = json.loads(bytes(raw) or b"{}")
        except (ValueError, UnicodeDecodeError):
            raise BadRequest("request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise BadRequest("request body must be a JSON object")
        return body

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in a worker thread, under the limiter, within ``request_timeout``."""
        try:
            with anyio.fail_after(self.request_timeout):
                return await anyio.to_thread.run_sync(lambda: fn(*args), limiter=self._limiter,
                                                      abandon_on_cancel=True)
        except TimeoutError:
            raise BadRequest(f"the recommender did not answer within {self.request_timeout:g} s "
                             "(request_timeout)", 504, code="timeout") from None

    async def _handle(self, request: Request, answer: Callable[[dict[str, Any]], Any]) -> Response:
        self.stats["requests"] += 1
        self.stats["in_flight"] += 1
        self.stats["max_in_flight"] = max(self.stats["max_in_flight"], self.stats["in_flight"])
        try:
            if not self._authorized(request):
                raise BadRequest("missing or wrong API key: send 'Authorization: Bearer <key>'", 401,
                                 code="invalid_api_key")
            body = await self._json(request)
            self._check_model(body)
            return await answer(body)
        except BadRequest as exc:
            self.stats["errors"] += 1
            response = _error(exc.status, str(exc), exc.param, exc.code)
            if exc.status in (408, 413):  # a body left unread: this connection cannot carry another request
                response.headers["Connection"] = "close"
            return response
        except Exception:
            self.stats["errors"] += 1
            raise
        finally:
            self.stats["in_flight"] -= 1

    def _check_model(self, body: Mapping[str, Any]) -> None:
        model = body.get("model")
        if model is None:
            return
        if not isinstance(model, str):
            raise BadRequest(f"'model' must be a string, got {type(model).__name__}", param="model")
        if model != self.model_name:
            raise BadRequest(f"The model '{model}' does not exist; this server serves '{self.model_name}'",
                             404, param="model", code="model_not_found")

    def _model_card(self) -> dict[str, Any]:
        return {"id": self.model_name, "object": "model", "created": self.created, "owned_by": "recaudit"}

    # -- routes --------------------------------------------------------------------------------
    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def models(self, request: Request) -> Response:
        if not self._authorized(request):
            return _error(401, "missing or wrong API key: send 'Authorization: Bearer <key>'", code="invalid_api_key")
        return JSONResponse({"object": "list", "data": [self._model_card()]})

    async def model(self, request: Request) -> Response:
        if not self._authorized(request):
            return _error(401, "missing or wrong API key: send 'Authorization: Bearer <key>'", code="invalid_api_key")
        model_id = request.path_params["model_id"]
        if model_id != self.model_name:
            return _error(404, f"The model '{model_id}' does not exist; this server serves '{self.model_name}'",
                          "model", "model_not_found")
        return JSONResponse(self._model_card())

    async def chat(self, request: Request) -> Response:
        return await self._handle(request, self._chat)

    async def completions(self, request: Request) -> Response:
        return await self._handle(request, self._completions)

    # -- answering -----------------------------------------------------------------------------
    def format_items(self, items: Sequence[str]) -> str:
        if self.response_format == "json":
            return json.dumps(list(items), ensure_ascii=False)
        return "\n".join(f"{i}. {t}" for i, t in enumerate(items, 1))

    def request_from(self, body: Mapping[str, Any], prompt: str | None, form: str) -> tuple[RecRequest, int] | None:
        """The structured request (``recaudit`` field) or the template-parsed one; None if neither."""
        extra = body.get("recaudit")
        if extra is not None:
            return _structured(extra)
        if prompt is None:
            return None
        parsed = self.prompts.parse(prompt, form)  # type: ignore[arg-type]
        if parsed is None:
            return None
        if parsed.task == "yesno":
            raise BadRequest("yes/no prompts are not served: the recommender interface has no yes/no call")
        return parsed.request, parsed.k

    async def recommend(self, req: RecRequest, k: int, n: int) -> list[str]:
        rec = self.recommender
        if not rec.has("generate"):
            raise BadRequest(f"the served recommender {rec.name!r} cannot generate lists")
        gens = await self._call(rec.generate_detailed, [req] * n, int(k))
        return [self.format_items(g.items) for g in gens]

    def _limits(self, body: Mapping[str, Any]) -> tuple[int, int | None, bool, bool]:
        n = _int_field(body, "n", 1, 1, MAX_N)
        max_tokens = _int_field(body, "max_completion_tokens", None, 0)
        if max_tokens is None:
            max_tokens = _int_field(body, "max_tokens", None, 0)
        _number_field(body, "temperature", 0.0, 2.0)
        _number_field(body, "top_p", 0.0, 1.0)
        _int_field(body, "seed", None, -(2 ** 63))
        stream = body.get("stream", False)
        if stream is None:
            stream = False
        if not isinstance(stream, bool):
            raise BadRequest(f"'stream' must be true or false, got {stream!r}", param="stream")
        options = body.get("stream_options")
        if options is not None and not isinstance(options, Mapping):
            raise BadRequest("'stream_options' must be an object", param="stream_options")
        include_usage = bool((options or {}).get("include_usage", False))
        return int(n or 1), max_tokens, stream, include_usage

    def _cut(self, texts: list[str], max_tokens: int | None) -> tuple[list[str], list[str]]:
        if max_tokens is None:
            return texts, ["stop"] * len(texts)
        out, finish = [], []
        for t in texts:
            cut, was_cut = self.tokens.cut(t, max_tokens)
            out.append(cut)
            finish.append("length" if was_cut else "stop")
        return out, finish

    def _usage(self, prompt_texts: Sequence[str], texts: Sequence[str]) -> dict[str, int] | None:
        if not self.tokens.exact:
            return None
        p = sum(self.tokens.count(t) for t in prompt_texts)
        c = sum(self.tokens.count(t) for t in texts)
        return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}

    async def _chat(self, body: dict[str, Any]) -> Response:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("'messages' must be a non-empty list", param="messages")
        prompt, texts_in = None, []
        for i, m in enumerate(messages):
            if not isinstance(m, Mapping) or not isinstance(m.get("role"), str):
                raise BadRequest(f"messages[{i}] must be an object with a string 'role'", param="messages")
            text = _content_text(m.get("content"), f"messages[{i}]")
            texts_in.append(text or "")
            if m["role"] == "user":
                prompt = text
        n, max_tokens, stream, include_usage = self._limits(body)
        found = self.request_from(body, prompt, "chat")
        if found is None:
            raise BadRequest("the last user message matches none of the server's prompt templates; "
                             "render it with recaudit's templates (the same `prompts` as the server) "
                             "or send the structured 'recaudit' field", param="messages")
        texts, finish = self._cut(await self.recommend(*found, n), max_tokens)
        usage = self._usage(texts_in, texts)
        answer = _Answer(texts, finish, [None] * len(texts))
        if stream:
            return self._stream("chat.completion.chunk", answer, usage if include_usage else None, chat=True)
        choices = [{"index": i, "finish_reason": f, "logprobs": None,
                    "message": {"role": "assistant", "content": t}} for i, (t, f) in enumerate(zip(texts, finish))]
        return JSONResponse(self._envelope("chat.completion", choices, usage))

    async def _completions(self, body: dict[str, Any]) -> Response:
        prompts = body.get("prompt")
        if isinstance(prompts, str):
            prompts = [prompts]
        if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
            raise BadRequest("'prompt' must be a string or a non-empty list of strings", param="prompt")
        n, max_tokens, stream, include_usage = self._limits(body)
        texts, finish, logprobs = [], [], []
        for prompt in prompts:
            for text, lp, cut_at in await self._one_completion(body, prompt, n, max_tokens):
                if cut_at is not None:
                    text, was_cut = self.tokens.cut(text, cut_at)
                else:
                    was_cut = False
                texts.append(text)
                finish.append("length" if was_cut else "stop")
                logprobs.append(lp)
        usage = self._usage(list(prompts), texts)
        answer = _Answer(texts, finish, logprobs)
        if stream:
            return self._stream("text_completion", answer, usage if include_usage else None, chat=False)
        choices = [{"index": i, "text": t, "logprobs": lp, "finish_reason": f}
                   for i, (t, f, lp) in enumerate(zip(texts, finish, logprobs))]
        return JSONResponse(self._envelope("text_completion", choices, usage))

    async def _one_completion(self, body: Mapping[str, Any], prompt: str, n: int,
                              max_tokens: int | None) -> list[tuple[str, dict[str, Any] | None, int | None]]:
        rec = self.recommender
        if body.get("echo") and body.get("logprobs") is not None and max_tokens == 0:
            if not rec.has("token-logprobs"):
                raise BadRequest(f"the served recommender {rec.name!r} has no token log-probabilities")
            values = [float(v) for v in (await self._call(rec.token_logprobs, [prompt]))[0]]
            clean = [None if v != v else v for v in values]  # NaN -> null (JSON)
            return [(prompt, {"tokens": [""] * len(clean), "token_logprobs": clean, "top_logprobs": None}, None)] * n
        found = self.request_from(body, prompt, "completion")
        if found is not None:
            return [(t, None, max_tokens) for t in await self.recommend(*found, n)]
        if rec.has("complete"):
            limit = 32 if max_tokens is None else max_tokens
            texts = await self._call(rec.complete, [prompt] * n, limit)
            return [(t, None, None) for t in texts]
        raise BadRequest("the prompt matches none of the server's prompt templates and the served "
                         f"recommender {rec.name!r} cannot complete free text", param="prompt")

    def _envelope(self, kind: str, choices: list[dict[str, Any]], usage: dict[str, int] | None) -> dict[str, Any]:
        return {"id": f"recaudit-{uuid.uuid4().hex[:16]}", "object": kind, "created": int(time.time()),
                "model": self.model_name, "system_fingerprint": None, "choices": choices, "usage": usage}

    def _stream(self, kind: str, answer: _Answer, usage: dict[str, int] | None, *, chat: bool) -> Response:
        """Server-sent events: per choice a role chunk (chat), word chunks, a finish chunk; the
        usage chunk when asked; then ``[DONE]``."""
        ident, created = f"recaudit-{uuid.uuid4().hex[:16]}", int(time.time())

        def event(choices: list[dict[str, Any]], extra: Mapping[str, Any] | None = None) -> bytes:
            chunk = {"id": ident, "object": kind, "created": created, "model": self.model_name,
                     "system_fingerprint": None, "choices": choices, **(extra or {})}
            return b"data: " + json.dumps(chunk, ensure_ascii=False).encode("utf-8") + b"\n\n"

        def piece(i: int, text: str | None, finish: str | None, role: bool = False) -> dict[str, Any]:
            if chat:
                delta: dict[str, Any] = {}
                if role:
                    delta["role"] = "assistant"
                if text is not None:
                    delta["content"] = text
                return {"index": i, "delta": delta, "logprobs": None, "finish_reason": finish}
            return {"index": i, "text": text or "", "logprobs": answer.logprobs[i] if finish else None,
                    "finish_reason": finish}

        async def events() -> AsyncIterator[bytes]:
            for i, (text, finish) in enumerate(zip(answer.texts, answer.finish)):
                if chat:
                    yield event([piece(i, "", None, role=True)])
                for word in re.findall(r"\S+\s*|\s+", text):
                    yield event([piece(i, word, None)])
                yield event([piece(i, None if chat else "", finish)])
            if usage is not None:
                yield event([], {"usage": usage})
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


# -- the server ---------------------------------------------------------------------------------
class RecommenderServer:
    """A bound socket and a Uvicorn server for a :class:`RecommenderApp` (not yet serving)."""

    def __init__(self, app: RecommenderApp, host: str, port: int, *, max_connections: int = 256,
                 graceful_timeout: int = 10) -> None:
        self.handler = app
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind((host, port))
        self.socket.listen(2048)
        self.socket.set_inheritable(True)
        self.server_address = self.socket.getsockname()[:2]
        self.limit = RequestLimit(app.app, max_connections)
        config = uvicorn.Config(self.limit, log_level="warning", access_log=False, lifespan="off", ws="none",
                                limit_concurrency=4 * max_connections, timeout_keep_alive=5,
                                timeout_graceful_shutdown=graceful_timeout, server_header=False)
        self.uvicorn = uvicorn.Server(config)

    @property
    def model_name(self) -> str:
        return self.handler.model_name

    @property
    def stats(self) -> dict[str, int]:
        return self.handler.stats

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT/v1`` (what an OpenAI client's ``base_url`` should be)."""
        host, port = self.server_address
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/v1"

    def serve_forever(self) -> None:
        """Serve until SIGINT/SIGTERM (main thread) or :meth:`shutdown`."""
        self.uvicorn.run(sockets=[self.socket])

    def shutdown(self) -> None:
        self.uvicorn.should_exit = True

    def server_close(self) -> None:
        self.socket.close()


def build_server(recommender: Recommender, host: str = "127.0.0.1", port: int = 8000, *,
                 model_name: str | None = None, prompts: PromptSet | str | Mapping[str, Any] | None = None,
                 response_format: ResponseFormat = "json", serialize: bool = True,
                 max_body_bytes: int = MAX_BODY_BYTES, request_timeout: float = 300.0,
                 max_connections: int = 256, api_key: str | None = None, tokenizer: Any = None,
                 body_timeout: float = 30.0) -> RecommenderServer:
    """Bind a server for ``recommender`` on ``host:port`` (port 0 = a free port); not yet serving.

    ``prompts`` is a :class:`PromptSet` or a spec for :func:`audit.prompts.load_prompt_set`;
    ``tokenizer`` a ``transformers`` tokenizer or a local directory holding one (for ``usage``
    and exact ``max_tokens``); ``api_key`` turns on bearer-token auth."""
    if prompts is not None and not isinstance(prompts, PromptSet):
        prompts = load_prompt_set(prompts)
    app = RecommenderApp(recommender, model_name=model_name, prompts=prompts, response_format=response_format,
                         serialize=serialize, max_body_bytes=max_body_bytes, request_timeout=request_timeout,
                         api_key=api_key, tokenizer=tokenizer, body_timeout=body_timeout)
    return RecommenderServer(app, host, port, max_connections=max_connections)


def serve(recommender: Recommender, host: str = "127.0.0.1", port: int = 8000, **options: Any) -> None:
    """Serve ``recommender`` until SIGINT/SIGTERM, then close it; ``options`` as for :func:`build_server`."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    if main:  # Uvicorn stops gracefully on SIGTERM, then raises it again: end here, not die
        signal.signal(signal.SIGTERM, _stop)
    server = None
    why = "shut down"
    try:
        server = build_server(recommender, host, port, **options)
        log.warning("recaudit serve: %r at %s (Ctrl-C to stop)", server.model_name, server.base_url)
        try:
            server.serve_forever()
        finally:
            server.server_close()
    except KeyboardInterrupt:
        why = "interrupted"
    except _Stopped:
        why = "SIGTERM"
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
        recommender.close()
    if server is not None:
        log.warning("recaudit serve: stopped (%s) after %d request(s), %d error(s); recommender closed", why,
                    server.stats["requests"], server.stats["errors"])


class _Stopped(Exception):
    """SIGTERM after Uvicorn's graceful shutdown."""


def _stop(signum: int, frame: Any) -> None:
    raise _Stopped()


@contextmanager
def running_server(recommender: Recommender, host: str = "127.0.0.1", port: int = 0,
                   **options: Any) -> Iterator[RecommenderServer]:
    """Run a server in a background thread for the ``with`` block; yields it (see ``base_url``)."""
    server = build_server(recommender, host, port, **options)
    thread = threading.Thread(target=server.serve_forever, name=f"recaudit-serve-{server.server_address[1]}",
                              daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.uvicorn.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield server
    finally:
        server.shutdown()
        thread.join(timeout=15)
        server.server_close()
