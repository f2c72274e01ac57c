"""The OpenAI-compatible server on loopback: the official `openai` client, raw HTTP, 32 concurrent streams,
malformed requests, a full queue, a client hanging up mid-stream, and a graceful shutdown."""

import asyncio
import json
import socket
import threading
import time

import pytest

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")
tokenizers = pytest.importorskip("tokenizers")

from lm.inference.engine import Engine, EngineConfig  # noqa: E402
from lm.inference.request import Request  # noqa: E402
from lm.inference.sampling import SamplingConfig  # noqa: E402
from lm.inference.server import make_app  # noqa: E402
from lm.interop.tokenizer import HFTokenizer  # noqa: E402
from lm.tokenizer.io import gpt2_bytes_to_unicode  # noqa: E402
from tests.inference.tiny import model  # noqa: E402

ECFG = EngineConfig(slots=4, page_size=4, prefill_chunk=8, decode_steps=2, bucket_reads=False)
NAME = "tiny"
TEMPLATE = ("{% for m in messages %}<|endoftext|>{{ m['role'] }}\n{{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}<|endoftext|>assistant\n{% endif %}")


def hf_byte_tokenizer() -> HFTokenizer:
    """A byte-level `tokenizers` tokenizer (no merges) with <|endoftext|> = 256 and a chat template: the
    257-token vocabulary of the tiny test models."""
    b2u = gpt2_bytes_to_unicode()
    tok = tokenizers.Tokenizer(tokenizers.models.BPE(vocab={b2u[b]: b for b in range(256)}, merges=[]))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    tok.add_special_tokens(["<|endoftext|>"])
    return HFTokenizer(tok, TEMPLATE, {"eos_token": "<|endoftext|>"})


class GatedEngine(Engine):
    """The engine with a gate (cleared: requests queue up but nothing runs) and an optional delay per step
    (so that a stream is still running when a test acts on it), recording every finished request."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gate, self.delay, self.finished = threading.Event(), 0.0, []
        self.gate.set()

    def step(self):
        self.gate.wait()
        time.sleep(self.delay)
        super().step()

    def _finish(self, req, reason):
        super()._finish(req, reason)
        self.finished.append(req)


class Served:
    """A uvicorn server in a thread on a loopback port chosen by the OS."""

    def __init__(self, **kwargs):
        params, c = model("gqa-window", context_length=64)
        self.tok = hf_byte_tokenizer()
        self.engine = GatedEngine(params, c, ECFG, tokenizer=self.tok)
        self.app = make_app(self.engine, self.tok, NAME, **kwargs)
        self.server = self.app.state.server
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.uvicorn = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", timeout_graceful_shutdown=10))
        self.thread = threading.Thread(target=self.uvicorn.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.uvicorn.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.01)
        self.client = openai.OpenAI(base_url=f"http://127.0.0.1:{self.port}/v1", api_key="unused", max_retries=0)

    def stop(self):
        self.uvicorn.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="module")
def served():
    s = Served(max_queue=64)
    yield s
    s.stop()


def direct(s: Served, prompt_ids, max_tokens: int, **sampling) -> Request:
    """The same request through a fresh engine in this thread: what the server must return."""
    params, c = model("gqa-window", context_length=64)
    eng = Engine(params, c, ECFG, tokenizer=s.tok)
    return eng.generate([Request(prompt_ids, SamplingConfig(max_new_tokens=max_tokens, **sampling))])[0]


# ----------------------------------------------------------------- raw HTTP
def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size, _, rest = data.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            break
        out, data = out + rest[:n], rest[n + 2:]
    return out


async def raw(port: int, method: str, path: str, body: bytes = b"", hang_up_after: int | None = None):
    """(status, headers dict, body bytes) of one HTTP/1.1 request; with hang_up_after, close the connection
    once that many server-sent events arrived."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
    await writer.drain()
    data = b""
    while chunk := await reader.read(65536):
        data += chunk
        if hang_up_after is not None and data.count(b"data: ") >= hang_up_after:
            writer.close()
            return None, None, data
    writer.close()
    head, _, payload = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    if headers.get("transfer-encoding") == "chunked":
        payload = _dechunk(payload)
    return int(lines[0].split()[1]), headers, payload


def events(payload: bytes) -> list:
    out = [line[6:] for line in payload.decode().split("\n") if line.startswith("data: ")]
    assert out[-1] == "[DONE]"
    return [json.loads(e) for e in out[:-1]]


# ----------------------------------------------------------------- tests
def test_openai_client_completions_chat_streaming_and_models(served):
    s, client = served, served.client
    assert [m.id for m in client.models.list().data] == [NAME]
    want = direct(s, s.tok.encode("Hello there"), 8, temperature=0)
    r = client.completions.create(model=NAME, prompt="Hello there", max_tokens=8, temperature=0)
    assert r.choices[0].text == want.text and r.choices[0].finish_reason == want.finish_reason
    assert r.usage.completion_tokens == len(want.tokens) and r.usage.prompt_tokens == 11
    pieces = [c.choices[0].text for c in client.completions.create(model=NAME, prompt="Hello there", max_tokens=8,
                                                                   temperature=0, stream=True)]
    assert "".join(pieces) == want.text and len(pieces) > 2
    # chat goes through the model's template; sampling with a seed is reproducible
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}]
    ids = s.tok.encode(s.tok.apply_chat_template(messages, add_generation_prompt=True))
    want = direct(s, ids, 6, temperature=0.8, seed=5)
    r = client.chat.completions.create(model=NAME, messages=messages, max_tokens=6, temperature=0.8, seed=5)
    assert r.choices[0].message.content == want.text and r.choices[0].message.role == "assistant"
    stream = client.chat.completions.create(model=NAME, messages=messages, max_tokens=6, temperature=0.8, seed=5,
                                            stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream) == want.text
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.completions.create(model=NAME, prompt="x", temperature=-1)
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.completions.create(model="gpt-5", prompt="x")


def test_32_concurrent_streaming_clients_over_raw_http(served):
    """32 clients at once (8 waves of the 4 slots), each streaming its own prompt: every stream is complete
    and equals that request run alone."""
    s = served
    prompts = [f"client {i}: " for i in range(32)]
    bodies = [json.dumps({"model": NAME, "prompt": p, "max_tokens": 6, "temperature": 0, "stream": True}).encode()
              for p in prompts]

    async def main():
        return await asyncio.gather(*(raw(s.port, "POST", "/v1/completions", b) for b in bodies))

    results = asyncio.run(main())
    for p, (status, headers, payload) in zip(prompts, results):
        assert status == 200 and headers["content-type"].startswith("text/event-stream")
        evs = events(payload)
        assert "".join(e["choices"][0]["text"] for e in evs) == direct(s, s.tok.encode(p), 6, temperature=0).text
        assert evs[-1]["choices"][0]["finish_reason"] in ("length", "stop")
    assert s.server.in_flight == 0 and s.engine.in_flight == 0


@pytest.mark.parametrize("body,status,needle", [
    (b"{not json", 400, "not valid JSON"),
    (b'{"model": "tiny"}', 400, "prompt"),
    (b'{"model": "tiny", "prompt": "x", "max_tokens": 0}', 400, "max_tokens"),
    (b'{"model": "tiny", "prompt": "x", "top_p": 1.5}', 400, "top_p"),
    (b'{"model": "tiny", "prompt": "x", "n": 100}', 400, "n"),
    (b'{"model": "tiny", "prompt": "x", "stop": ["a", "b", "c", "d", "e"]}', 400, "stop"),
    (b'{"model": "tiny", "prompt": "x", "logprobs": 3}', 400, "logprobs"),
    (b'{"model": "tiny", "prompt": [99999]}', 400, "outside the vocabulary"),
    (b'{"model": "tiny", "prompt": "' + b"y" * 80 + b'"}', 400, "longer than the model's context_length=64"),
    (b'{"model": "tiny", "messages": []}', 400, "messages"),
    (b'{"model": "tiny", "messages": [{"role": "wizard", "content": "x"}]}', 400, "role"),
])
def test_malformed_requests_get_a_4xx_with_a_message(served, body, status, needle):
    path = "/v1/chat/completions" if b"messages" in body else "/v1/completions"
    code, _, payload = asyncio.run(raw(served.port, "POST", path, body))
    err = json.loads(payload)["error"]
    assert code == status and needle in err["message"], err
    assert asyncio.run(raw(served.port, "GET", "/health"))[0] == 200  # and the server is fine


def test_full_queue_gets_503_and_a_hang_up_frees_the_slot(served):
    s = served
    body = json.dumps({"model": NAME, "prompt": "abc", "max_tokens": 24, "temperature": 0, "stream": True}).encode()

    async def full_queue():
        s.server.max_queue = 2
        s.engine.gate.clear()  # nothing runs: two requests fill the queue
        try:
            held = [asyncio.create_task(raw(s.port, "POST", "/v1/completions", body)) for _ in range(2)]
            while s.server.in_flight < 2:
                await asyncio.sleep(0.01)
            status, _, payload = await raw(s.port, "POST", "/v1/completions", body)
            assert status == 503 and "busy" in json.loads(payload)["error"]["message"]
        finally:
            s.engine.gate.set()
            s.server.max_queue = 64
        return await asyncio.gather(*held)

    assert all(status == 200 for status, _, _ in asyncio.run(full_queue()))
    s.engine.delay = 0.02  # slow enough that the stream is still running when the client leaves
    try:
        before = len(s.engine.finished)
        asyncio.run(raw(s.port, "POST", "/v1/completions", body, hang_up_after=2))
        deadline = time.monotonic() + 10
        while len(s.engine.finished) == before or s.engine.in_flight:
            assert time.monotonic() < deadline, "the slot was not freed"
            time.sleep(0.01)
    finally:
        s.engine.delay = 0.0
    req = s.engine.finished[-1]
    assert req.finish_reason == "cancelled" and len(req.tokens) < 24
    assert s.engine.pages.available == s.engine.pages.num_pages and s.server.in_flight == 0


def test_graceful_shutdown_finishes_running_requests_and_refuses_new_ones():
    s = Served(max_queue=8)
    body = json.dumps({"model": NAME, "prompt": "abc", "max_tokens": 5, "temperature": 0, "stream": True}).encode()

    async def main():
        s.engine.gate.clear()
        task = asyncio.create_task(raw(s.port, "POST", "/v1/completions", body))
        while s.server.in_flight < 1:
            await asyncio.sleep(0.01)
        s.uvicorn.should_exit = True
        await asyncio.sleep(0.3)
        with pytest.raises(OSError):  # the listening socket is closed
            await raw(s.port, "GET", "/health")
        s.engine.gate.set()
        return await task

    status, _, payload = asyncio.run(main())
    evs = events(payload)
    assert status == 200 and evs[-1]["choices"][0]["finish_reason"] == "length"
    assert "".join(e["choices"][0]["text"] for e in evs) == direct(s, s.tok.encode("abc"), 5, temperature=0).text
    s.thread.join(timeout=30)
    assert not s.thread.is_alive() and not s.server._thread.is_alive()
