"""An OpenAI-compatible HTTP API over the continuous-batching engine (FastAPI on an ASGI server).

    app = make_app(engine, tokenizer, "my-model")      # then: uvicorn.run(app, port=8000)
    # POST /v1/completions, POST /v1/chat/completions (both with "stream": true for server-sent
    # events), GET /v1/models, GET /health

The engine runs in its own thread (started and stopped with the app's lifespan); each HTTP request
becomes one engine `Request` per prompt and per `n`, whose updates reach the event loop through
`call_soon_threadsafe`. Bodies are validated (a bad one gets a 400 naming the field, in OpenAI's
error format, never a crash); a prompt longer than the model's context is refused by name; when
`max_queue` requests are already waiting or running, new ones get a 503; a client that hangs up
(a stream closed half way, a non-streaming request abandoned) cancels its requests, which frees
their slots and pages. Shutting down stops taking requests (503), lets running ones finish for up
to `shutdown_timeout` seconds, cancels the rest and stops the engine thread.

Beyond OpenAI's parameters: `top_k` (0: off) and `stop_token_ids`, as vLLM accepts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import random
import threading
import time
import uuid
from typing import Literal

from fastapi import FastAPI
from fastapi import Request as HTTPRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from lm.inference.engine import Engine
from lm.inference.request import Request
from lm.inference.sampling import SamplingConfig


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def _error(status: int, message: str, param=None, code=None, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status)


# ----------------------------------------------------------------- request bodies
class _Common(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0)
    n: int = Field(1, ge=1, le=16)
    stream: bool = False
    stop: str | list[str] | None = Field(None, validate_default=True)
    stop_token_ids: list[int] = Field(default_factory=list, max_length=8)
    seed: int | None = Field(None, ge=0, lt=2**31)
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: bool | int | None = None
    stream_options: dict | None = None  # {"include_usage": true}: a last chunk with the token counts

    @field_validator("stop")
    @classmethod
    def _stops(cls, v):
        stops = [v] if isinstance(v, str) else list(v or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("stop takes at most 4 non-empty strings")
        return stops

    @model_validator(mode="after")
    def _unsupported(self):
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name):
                raise ValueError(f"{name} is not supported by this server; leave it at 0")
        if self.logprobs:
            raise ValueError("logprobs are not supported by this server")
        return self


class CompletionBody(_Common):
    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool = False

    @field_validator("echo")
    @classmethod
    def _echo(cls, v):
        if v:
            raise ValueError("echo is not supported by this server")
        return v


class Message(BaseModel):
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        if any(p.get("type") != "text" or not isinstance(p.get("text"), str) for p in self.content):
            raise ValueError("only text content parts ({'type': 'text', 'text': ...}) are supported")
        return "".join(p["text"] for p in self.content)


class ChatBody(_Common):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


# ----------------------------------------------------------------- the server
@dataclasses.dataclass
class _Call:
    """One HTTP request's engine requests and the queue their updates arrive on."""
    requests: list[Request]
    updates: asyncio.Queue


class OpenAIServer:
    def __init__(self, engine: Engine, tokenizer, model_name: str, max_queue: int = 64,
                 shutdown_timeout: float = 30.0, default_max_tokens: int = 256):
        if max_queue < 1:
            raise ValueError(f"max_queue must be positive, got {max_queue}")
        self.engine, self.tokenizer, self.model_name = engine, tokenizer, model_name
        self.max_queue, self.shutdown_timeout, self.default_max_tokens = max_queue, shutdown_timeout, default_max_tokens
        self.created = int(time.time())
        self.in_flight = 0  # engine requests of open HTTP calls (event-loop thread only)
        self.draining = False
        self.error: BaseException | None = None
        self._open: dict[int, _Call] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.app = self._build()

    # ------------------------------------------------------------- engine thread
    def _run_engine(self) -> None:
        try:
            self.engine.run(self._stop)
        except BaseException as e:  # a broken engine must not leave clients waiting forever
            self.error = e
            for call in list(self._open.values()):
                self.loop.call_soon_threadsafe(call.updates.put_nowait, None)

    @contextlib.asynccontextmanager
    async def lifespan(self, app):
        self.loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run_engine, name="engine", daemon=True)
        self._thread.start()
        try:
            yield
        finally:
            self.draining = True
            deadline = time.monotonic() + self.shutdown_timeout
            while self._open and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            for call in list(self._open.values()):
                for r in call.requests:
                    self.engine.cancel(r)
            while self._open and time.monotonic() < deadline + 5:
                await asyncio.sleep(0.02)
            self._stop.set()
            self._thread.join(timeout=30)

    # ------------------------------------------------------------- requests
    def _sampling(self, body: _Common, max_tokens: int | None, i: int) -> SamplingConfig:
        seed = body.seed + i if body.seed is not None else random.getrandbits(31)
        return SamplingConfig(temperature=body.temperature, top_k=body.top_k, top_p=body.top_p,
                              max_new_tokens=max_tokens, stop_ids=tuple(body.stop_token_ids), seed=seed)

    def _prompts(self, body: CompletionBody) -> list[list[int]]:
        p = body.prompt
        if isinstance(p, str):
            texts = [p]
        elif p and all(isinstance(x, int) for x in p):
            return [list(p)]
        elif p and all(isinstance(x, list) for x in p):
            return [list(x) for x in p]
        else:
            texts = list(p)
        if not texts or any(not t for t in texts):
            raise APIError(400, "prompt must be a non-empty string, list of strings or list of token ids", "prompt")
        return [self.tokenizer.encode(t) for t in texts]

    def _chat_prompt(self, body: ChatBody) -> list[int]:
        if not getattr(self.tokenizer, "chat_template", None):
            raise APIError(400, f"model {self.model_name!r} has no chat template; use /v1/completions", "messages")
        try:
            messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        except ValueError as e:
            raise APIError(400, str(e), "messages") from None
        return self.tokenizer.encode(self.tokenizer.apply_chat_template(messages, add_generation_prompt=True))

    def _open_call(self, prompts: list[list[int]], body: _Common, max_tokens: int | None) -> _Call:
        if body.model != self.model_name:
            raise APIError(404, f"model {body.model!r} does not exist; this server serves {self.model_name!r}",
                           "model", "model_not_found")
        if self.draining or self.error is not None:
            raise APIError(503, "the server is shutting down" if self.draining else f"the engine failed: {self.error}")
        max_tokens = max_tokens or self.default_max_tokens
        updates: asyncio.Queue = asyncio.Queue()
        reqs = []
        for i, prompt in enumerate(p for p in prompts for _ in range(body.n)):
            index = len(reqs)

            def push(req: Request, index=index):  # engine thread -> event loop
                item = (index, req.stream_text(), req.finish_reason, len(req.tokens))
                self.loop.call_soon_threadsafe(updates.put_nowait, item)

            req = Request(prompt, self._sampling(body, max_tokens, i), tuple(body.stop), on_update=push)
            try:
                self.engine.check(req)
            except ValueError as e:
                long = "longer than" in str(e)
                raise APIError(400, f"prompt {i // body.n}: {e}", "prompt" if long else None,
                               "context_length_exceeded" if long else None) from None
            reqs.append(req)
        if self.in_flight + len(reqs) > self.max_queue:
            raise APIError(503, f"the server is busy: {self.in_flight} requests queued or running "
                                f"(max_queue={self.max_queue}); retry later")
        call = _Call(reqs, updates)
        self.in_flight += len(reqs)
        self._open[id(call)] = call
        for r in reqs:
            self.engine.submit(r)
        return call

    def _close_call(self, call: _Call) -> None:
        for r in call.requests:
            if not r.done:
                self.engine.cancel(r)
        if self._open.pop(id(call), None) is not None:
            self.in_flight -= len(call.requests)

    async def _updates(self, call: _Call, http: HTTPRequest):
        """Yield (index, text, finish_reason, n_tokens) until every request of `call` has finished; a client
        that disconnects ends it (the caller's `finally` cancels what is left)."""
        left = len(call.requests)
        while left:
            try:
                item = await asyncio.wait_for(call.updates.get(), timeout=0.5)
            except asyncio.TimeoutError:
                if await http.is_disconnected():
                    return
                continue
            if item is None:
                raise APIError(500, f"the engine failed: {self.error}", kind="server_error")
            left -= item[2] is not None
            yield item

    # ------------------------------------------------------------- the app
    def _build(self) -> FastAPI:
        app = FastAPI(title="lm", lifespan=self.lifespan)

        @app.exception_handler(APIError)
        async def api_error(_, e: APIError):
            return _error(e.status, e.message, e.param, e.code,
                          "invalid_request_error" if e.status < 500 else "server_error")

        @app.exception_handler(RequestValidationError)
        async def invalid(_, e: RequestValidationError):
            first = e.errors()[0]
            where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
            msg = first.get("msg", "invalid request")
            if first.get("type") == "json_invalid":
                msg = "the request body is not valid JSON"
            return _error(400, f"{where}: {msg}" if where else msg, where or None)

        @app.exception_handler(StarletteHTTPException)
        async def http_error(_, e: StarletteHTTPException):
            return _error(e.status_code, str(e.detail))

        @app.get("/health")
        async def health():
            if self.error is not None:
                return _error(503, f"the engine failed: {self.error}", kind="server_error")
            if self.draining:
                return _error(503, "shutting down", kind="server_error")
            return {"status": "ok", "in_flight": self.in_flight}

        @app.get("/v1/models")
        async def models():
            return {"object": "list", "data": [{"id": self.model_name, "object": "model", "created": self.created,
                                                "owned_by": "lm"}]}

        @app.post("/v1/completions")
        async def completions(body: CompletionBody, http: HTTPRequest):
            call = self._open_call(self._prompts(body), body, body.max_tokens or 16)
            return await self._respond(call, body, http, chat=False)

        @app.post("/v1/chat/completions")
        async def chat(body: ChatBody, http: HTTPRequest):
            call = self._open_call([self._chat_prompt(body)], body, body.max_completion_tokens or body.max_tokens)
            return await self._respond(call, body, http, chat=True)

        return app

    async def _respond(self, call: _Call, body: _Common, http: HTTPRequest, chat: bool):
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        head = {"id": rid, "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
                "model": self.model_name}
        if body.stream:
            return StreamingResponse(self._stream(call, body, http, head, chat), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        try:
            async for _ in self._updates(call, http):
                pass
        finally:
            self._close_call(call)
        choices = []
        for i, r in enumerate(call.requests):
            text = r.text if r.finish_reason else r.stream_text()
            c = {"index": i, "finish_reason": r.finish_reason}
            choices.append({**c, "message": {"role": "assistant", "content": text}} if chat
                           else {**c, "text": text, "logprobs": None})
        usage = _usage(call)
        return {**head, "choices": choices, "usage": usage}

    async def _stream(self, call: _Call, body: _Common, http: HTTPRequest, head: dict, chat: bool):
        head = {**head, "object": "chat.completion.chunk" if chat else "text_completion"}
        sent = [0] * len(call.requests)

        def event(index, delta: str | None, finish, role: bool = False) -> str:
            if chat:
                d = {"role": "assistant", "content": ""} if role else ({} if delta is None else {"content": delta})
                choice = {"index": index, "delta": d, "finish_reason": finish}
            else:
                choice = {"index": index, "text": delta or "", "finish_reason": finish, "logprobs": None}
            return f"data: {json.dumps({**head, 'choices': [choice]})}\n\n"

        try:
            if chat:
                for i in range(len(call.requests)):
                    yield event(i, None, None, role=True)
            async for index, text, finish, _ in self._updates(call, http):
                if len(text) > sent[index]:
                    yield event(index, text[sent[index]:], None)
                    sent[index] = len(text)
                if finish is not None:
                    yield event(index, None if chat else "", "stop" if finish == "cancelled" else finish)
            if (body.stream_options or {}).get("include_usage"):
                yield f"data: {json.dumps({**head, 'choices': [], 'usage': _usage(call)})}\n\n"
            yield "data: [DONE]\n\n"
        except APIError as e:
            yield f"data: {json.dumps({'error': {'message': e.message, 'type': 'server_error'}})}\n\n"
        finally:  # also when the client hangs up: the task is cancelled and this frees the slots
            self._close_call(call)


def _usage(call: _Call) -> dict:
    prompt = sum(len(r.prompt) for r in call.requests)
    completion = sum(len(r.tokens) for r in call.requests)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def make_app(engine: Engine, tokenizer, model_name: str, **kwargs) -> FastAPI:
    """The FastAPI app (its `state.server` is the OpenAIServer); kwargs go to `OpenAIServer`."""
    server = OpenAIServer(engine, tokenizer, model_name, **kwargs)
    server.app.state.server = server
    return server.app
