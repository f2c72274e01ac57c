"""A continuous-batching engine over the paged KV cache.

    engine = Engine(params, config, EngineConfig(slots=8), tokenizer=tok)
    reqs = engine.generate([Request(ids_a, SamplingConfig(temperature=0.7, seed=1)), Request(ids_b, greedy)])
    # or, serving: engine.submit(req) from any thread while a thread runs engine.run(stop_event)

A fixed number of decode slots share one compiled decode step ([slots, 1] tokens, a few steps per
device call). Each scheduler iteration (`step`) admits waiting requests into free slots, runs one
prefill call (the next chunk of up to `prefill_rows` pending prompts, oldest first; long prompts are
prefilled `prefill_chunk` tokens at a time, so decoding rows wait at most one chunk), then one
decode call for every decoding row; a row that finishes frees its slot and its pages at once, and
the next request takes them.

Each request samples with its own settings (temperature, top-k, top-p, max tokens, stop ids and
strings) and its own key: token i of a request is drawn with fold_in(PRNGKey(seed), i). A row's
computation never mixes with the other rows', and attention reads keys in whole blocks whose
trailing empty ones change nothing (`paged_extend`'s block_pages), so a request gives the same
tokens alone as in a busy batch (tests/inference/test_engine.py).

Prompts share pages by prefix (`lm.inference.pages`): a request whose prompt begins with full
blocks some earlier prompt wrote (the G samples of a GRPO group, k-shot prompts, a system prompt)
reads those pages and prefills only the rest. A prompt whose first block matches one being
prefilled in the same call waits for the next call, so the second of G identical prompts finds the
first's pages.

Memory: a request is admitted only when the pool can hold its prompt plus its whole token budget
(pages are reserved at admission and allocated as the sequence grows), so nothing is ever
preempted.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import queue
import threading
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lm.inference.generate import check_prompt
from lm.inference.pages import PageTable, block_keys
from lm.inference.paged import init_pool, paged_extend, pages_for
from lm.inference.request import Request
from lm.inference.sampling import sample_rows
from lm.model import ModelConfig


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    slots: int = 8  # requests decoded together
    page_size: int = 16  # tokens per page
    num_pages: int = 0  # pool size; 0: every slot can hold a full context at once
    prefill_chunk: int = 128  # most prompt tokens of one request read per prefill call
    prefill_rows: int = 4  # requests prefilled together in one call
    decode_steps: int = 4  # decode steps per device call (tokens reach the host this many at a time)
    max_stop_ids: int = 8  # stop ids per request (the tokenizer's special tokens included)
    bucket_reads: bool = True  # attend to a power-of-two number of key blocks (enough for the longest row)
    key_block: int = 256  # tokens per attention block (a multiple of page_size); reads come in whole blocks
    prefix_sharing: bool = True

    def __post_init__(self):
        for name in ("slots", "page_size", "prefill_chunk", "prefill_rows", "decode_steps", "max_stop_ids"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"EngineConfig.{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.key_block % self.page_size:
            raise ValueError(f"EngineConfig.key_block={self.key_block} must be a multiple of "
                             f"page_size={self.page_size}")
        if self.num_pages < 0:
            raise ValueError(f"EngineConfig.num_pages must be >= 0 (0 = enough for every slot), got {self.num_pages}")


def _bucket(n: int, cap: int, least: int = 1) -> int:
    """The smallest power of two >= n (and >= least), at most cap: few shapes, few compiles."""
    return min(cap, max(least, 1 << max(n - 1, 0).bit_length()))


def _row_keys(keys: jax.Array, index: jax.Array) -> jax.Array:
    """Each row's key for its token number `index`: fold_in(PRNGKey(seed), index)."""
    return jax.vmap(jax.random.fold_in)(keys, index)


@functools.partial(jax.jit, static_argnames=("config", "read_pages", "block_pages"), donate_argnums=(1,))
def _prefill(params, pool, table, length, tokens, n_new, key, temperature, top_k, top_p, *, config: ModelConfig,
             read_pages: int, block_pages: int):
    """One prompt chunk of each of `rows` requests ([rows, chunk] tokens) and the first token drawn after it."""
    logits, pool = paged_extend(params, config, pool, table, length, tokens, n_new, read_pages=read_pages,
                                block_pages=block_pages, last_only=True)
    first = jnp.zeros(tokens.shape[0], jnp.int32)
    return sample_rows(logits, _row_keys(key, first), temperature, top_k, top_p), pool


@functools.partial(jax.jit, static_argnames=("config", "read_pages", "block_pages", "steps"), donate_argnums=(1,))
def _decode(params, pool, table, lengths, token, active, count, limit, keys, temperature, top_k, top_p, stop_ids,
            *, config: ModelConfig, read_pages: int, block_pages: int, steps: int):
    """`steps` decode steps of every slot. Returns (tokens int32 [steps, slots] with -1 where a row emitted
    nothing, (lengths, token, active, count) after them, stopped bool [slots], pool)."""

    def body(carry, _):
        pool, token, lengths, count, active, stopped = carry
        logits, pool = paged_extend(params, config, pool, table, lengths, token[:, None], active.astype(jnp.int32),
                                    read_pages=read_pages, block_pages=block_pages, last_only=True)
        nxt = sample_rows(logits, _row_keys(keys, count), temperature, top_k, top_p)
        stop = active & jnp.any(nxt[:, None] == stop_ids, axis=1)
        emit = active & ~stop
        lengths, count = lengths + active, count + emit
        finished = stop | (emit & (count >= limit))
        carry = (pool, jnp.where(emit, nxt, token), lengths, count, active & ~finished, stopped | stop)
        return carry, jnp.where(emit, nxt, -1)

    init = (pool, token, lengths, count, active, jnp.zeros_like(active))
    (pool, token, lengths, count, active, stopped), out = jax.lax.scan(body, init, None, length=steps)
    return out, (lengths, token, active, count), stopped, pool


class Engine:
    """Continuous batching over a paged KV pool. `submit` and `cancel` may be called from any thread;
    `step` (or `run`, which loops over it) from one thread only."""

    def __init__(self, params, config: ModelConfig, engine: EngineConfig = EngineConfig(), tokenizer=None,
                 stop_ids: Sequence[int] | None = None):
        """stop_ids: ids that end every request (default: the tokenizer's special tokens, if any)."""
        self.params, self.config, self.engine, self.tokenizer = params, config, engine, tokenizer
        if stop_ids is None:
            stop_ids = tuple(getattr(tokenizer, "special_ids", {}).values()) if tokenizer is not None else ()
        self.stop_ids = tuple(int(i) for i in stop_ids)
        e, s = engine, engine.slots
        # Attention reads whole blocks of key pages (`paged_extend`'s block_pages), so a row's logits do not
        # depend on how many blocks its batch reads; the table is padded to whole blocks.
        self.block_pages = max(1, min(e.key_block // e.page_size, pages_for(config.context_length, e.page_size)))
        self.max_pages = pages_for(pages_for(config.context_length, e.page_size), self.block_pages) * self.block_pages
        num_pages = e.num_pages or s * self.max_pages
        self.pool = init_pool(config, num_pages, e.page_size)
        self.pages = PageTable(num_pages, e.page_size)
        self.table = np.zeros((s, self.max_pages), np.int32)
        self.lengths, self.token, self.count, self.limit = (np.zeros(s, np.int32) for _ in range(4))
        self.active = np.zeros(s, bool)
        self.keys = np.zeros((s, 2), np.uint32)
        self.temperature, self.top_p = np.zeros(s, np.float32), np.ones(s, np.float32)
        self.top_k = np.zeros(s, np.int32)
        self.slot_stop = np.full((s, e.max_stop_ids), -1, np.int32)
        self.requests: list[Request | None] = [None] * s
        self.slot_pages: list[list[int]] = [[] for _ in range(s)]
        self.reserved = np.zeros(s, np.int64)  # pages promised to a slot and not yet allocated
        self.prefilled = np.zeros(s, np.int64)  # prompt tokens in the cache (shared ones included)
        self.waiting: collections.deque[Request] = collections.deque()
        self.prefilling: collections.deque[int] = collections.deque()
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._wake = threading.Event()
        self.stats = collections.Counter()  # prefill_tokens, shared_tokens, decode_calls, finished

    # ------------------------------------------------------------- any thread
    def check(self, req: Request) -> None:
        """A ValueError saying what is wrong with `req` for this model, if anything."""
        check_prompt(req.prompt, self.config)
        n_stop = len(set(self.stop_ids) | set(req.sampling.stop_ids))
        if n_stop > self.engine.max_stop_ids:
            raise ValueError(f"{n_stop} stop ids, more than EngineConfig.max_stop_ids={self.engine.max_stop_ids}")
        if req.stop and self.tokenizer is None:
            raise ValueError("stop strings need the engine to have a tokenizer")
        if self._pages_needed(req) > self.pages.num_pages:
            raise ValueError(f"the request needs {self._pages_needed(req)} pages, more than the pool's "
                             f"{self.pages.num_pages}; raise EngineConfig.num_pages or lower max_new_tokens")

    def submit(self, req: Request) -> Request:
        """Queue `req` (checked first: a ValueError if it can never run)."""
        self.check(req)
        self._inbox.put(("submit", req))
        self._wake.set()
        return req

    def cancel(self, req: Request) -> None:
        """Stop `req` (finish reason "cancelled") and free its slot at the next step."""
        self._inbox.put(("cancel", req))
        self._wake.set()

    # ------------------------------------------------------------- engine thread
    @property
    def busy(self) -> bool:
        return bool(self.waiting or self.prefilling or self.active.any() or not self._inbox.empty())

    @property
    def in_flight(self) -> int:
        """Requests waiting or holding a slot."""
        return len(self.waiting) + sum(r is not None for r in self.requests)

    def generate(self, requests: Sequence[Request]) -> list[Request]:
        """Submit `requests` and step until every one is done (offline use: rollouts, evaluation)."""
        for r in requests:
            self.submit(r)
        while not all(r.done for r in requests):
            self.step()
        return list(requests)

    def run(self, stop: threading.Event, idle_wait: float = 0.05) -> None:
        """Step until `stop` is set; sleeps while there is nothing to do."""
        while not stop.is_set():
            if self.busy:
                self.step()
            else:
                self._wake.wait(idle_wait)
                self._wake.clear()

    def step(self) -> None:
        """One scheduler iteration: take new and cancelled requests, admit, one prefill chunk, one decode call."""
        self._drain()
        self._admit()
        if self.prefilling:
            self._prefill_chunk()
        if self.active.any():
            self._decode()

    # ------------------------------------------------------------- internals
    def _limit(self, req: Request) -> int:
        """Most tokens `req` may generate: max_new_tokens, and the context (the last token is never read)."""
        return min(req.sampling.max_new_tokens, self.config.context_length - len(req.prompt) + 1)

    def _pages_needed(self, req: Request) -> int:
        return pages_for(len(req.prompt) + self._limit(req) - 1, self.engine.page_size)

    def _drain(self) -> None:
        while True:
            try:
                kind, req = self._inbox.get_nowait()
            except queue.Empty:
                return
            if kind == "submit":
                self.waiting.append(req)
            elif req in self.waiting:
                self.waiting.remove(req)
                self._finish(req, "cancelled")
            elif req in self.requests:
                self._release(self.requests.index(req), "cancelled")

    def _admit(self) -> None:
        while self.waiting and None in self.requests:
            req = self.waiting[0]
            need = self._pages_needed(req)
            if need > self.pages.available - int(self.reserved.sum()):
                return  # the oldest request waits for pages; later ones wait behind it (no starvation)
            self.waiting.popleft()
            slot = self.requests.index(None)
            s = req.sampling
            self.requests[slot], self.reserved[slot], self.prefilled[slot] = req, need, 0
            self.slot_pages[slot] = []
            self.keys[slot] = np.asarray(jax.random.key_data(jax.random.PRNGKey(s.seed)))
            self.temperature[slot], self.top_k[slot], self.top_p[slot] = s.temperature, s.top_k, s.top_p
            self.limit[slot], self.count[slot] = self._limit(req), 0
            stops = list(dict.fromkeys((*self.stop_ids, *s.stop_ids)))
            self.slot_stop[slot] = -1
            self.slot_stop[slot, : len(stops)] = stops
            self.prefilling.append(slot)

    def _grow(self, slot: int, tokens: int) -> None:
        """Allocate pages (from the slot's reservation) until the slot holds `tokens` tokens."""
        n = pages_for(tokens, self.engine.page_size) - len(self.slot_pages[slot])
        if n > 0:
            new = self.pages.allocate(n)
            self.reserved[slot] -= n
            self.table[slot, len(self.slot_pages[slot]): len(self.slot_pages[slot]) + n] = new
            self.slot_pages[slot] += new

    def _read_pages(self, tokens: int) -> int:
        """Pages the next call reads: whole key blocks, enough for `tokens` tokens (a power of two of them)."""
        blocks, most = pages_for(pages_for(tokens, self.engine.page_size), self.block_pages), \
            self.max_pages // self.block_pages
        return (_bucket(blocks, most) if self.engine.bucket_reads else most) * self.block_pages

    def _prefill_chunk(self) -> None:
        """One prefill call: the next chunk of up to `prefill_rows` prompts, oldest first. A prompt whose first
        block matches one already in the call waits for the next call, where it can share the pages."""
        e, rows, firsts = self.engine, [], set()
        for slot in self.prefilling:
            if len(rows) == e.prefill_rows:
                break
            prompt = self.requests[slot].prompt
            first = block_keys(prompt, e.page_size, 1)
            if self.prefilled[slot] == 0 and first and first[0] in firsts and not self.pages.cached(first[0]):
                continue
            firsts.update(first)
            if self.prefilled[slot] == 0 and e.prefix_sharing and not self.slot_pages[slot]:
                self._share_prefix(slot)
            rows.append(slot)
        n = [min(len(self.requests[s].prompt) - int(self.prefilled[s]), e.prefill_chunk) for s in rows]
        width = _bucket(max(n), e.prefill_chunk, least=min(8, e.prefill_chunk))
        r = _bucket(len(rows), e.prefill_rows)  # padding rows cost a whole row of compute each
        table = np.zeros((r, self.max_pages), np.int32)
        start, n_new, tokens = np.zeros(r, np.int32), np.zeros(r, np.int32), np.zeros((r, width), np.int32)
        idx = np.zeros(r, np.int64)  # padding rows read slot 0's settings and write nothing
        for i, (slot, k) in enumerate(zip(rows, n)):
            at = int(self.prefilled[slot])
            self._grow(slot, at + k)
            table[i], start[i], n_new[i], idx[i] = self.table[slot], at, k, slot
            tokens[i, :k] = self.requests[slot].prompt[at: at + k]
        top = max(int(start[i]) + k for i, k in enumerate(n))
        tok, self.pool = _prefill(self.params, self.pool, table, start, tokens, n_new, self.keys[idx],
                                  self.temperature[idx], self.top_k[idx], self.top_p[idx], config=self.config,
                                  read_pages=self._read_pages(top), block_pages=self.block_pages)
        self.stats["prefill_tokens"] += sum(n)
        tok = None if all(self.prefilled[s] + k < len(self.requests[s].prompt) for s, k in zip(rows, n)) \
            else jax.device_get(tok)
        for i, (slot, k) in enumerate(zip(rows, n)):
            self.prefilled[slot] += k
            if self.prefilled[slot] == len(self.requests[slot].prompt):
                self._first_token(slot, int(tok[i]))

    def _share_prefix(self, slot: int) -> None:
        """Point the slot at cached pages holding its prompt's leading blocks. Whole blocks only, and never the
        block with the last prompt token: its logits are needed."""
        prompt, page = self.requests[slot].prompt, self.engine.page_size
        shared = self.pages.lookup(prompt, max_blocks=(len(prompt) - 1) // page)
        if shared:
            self.slot_pages[slot] = list(shared)
            self.table[slot, : len(shared)] = shared
            self.reserved[slot] -= len(shared)
            self.prefilled[slot] = len(shared) * page
            self.stats["shared_tokens"] += len(shared) * page

    def _first_token(self, slot: int, tok: int) -> None:
        """The prompt is in the cache and `tok` was drawn after it: register its blocks, start decoding."""
        prompt = self.requests[slot].prompt
        self.prefilling.remove(slot)
        if self.engine.prefix_sharing:
            self.pages.register(prompt, self.slot_pages[slot])
        self.lengths[slot], self.token[slot] = len(prompt), tok
        if tok in self.slot_stop[slot]:
            self._release(slot, "stop")
            return
        self.count[slot], self.active[slot] = 1, True
        if self._deliver(slot, [tok]):
            return
        if self.count[slot] >= self.limit[slot]:
            self._release(slot, "length")

    def _decode(self) -> None:
        steps = self.engine.decode_steps
        rows = np.flatnonzero(self.active)
        top = 0
        for slot in rows:  # pages for every token this call may write (the pending one and steps - 1 more)
            tokens = min(int(self.lengths[slot]) + steps, len(self.requests[slot].prompt) + int(self.limit[slot]) - 1)
            self._grow(slot, tokens)
            top = max(top, tokens)
        read = self._read_pages(top)
        self.stats[f"decode_read_pages_{read}"] += 1
        out, (lengths, token, active, count), stopped, self.pool = _decode(
            self.params, self.pool, self.table, self.lengths, self.token, self.active, self.count, self.limit,
            self.keys, self.temperature, self.top_k, self.top_p, self.slot_stop, config=self.config,
            read_pages=read, block_pages=self.block_pages, steps=steps)
        out, lengths, token, active, count, stopped = jax.device_get((out, lengths, token, active, count, stopped))
        self.stats["decode_calls"] += 1
        for slot in rows:
            self.lengths[slot], self.token[slot], self.count[slot] = lengths[slot], token[slot], count[slot]
            self.active[slot] = active[slot]
            new = [int(t) for t in out[:, slot] if t >= 0]
            if new and self._deliver(slot, new):
                continue
            if not active[slot]:
                self._release(slot, "stop" if stopped[slot] else "length")

    def _deliver(self, slot: int, ids: list[int]) -> bool:
        """Hand new tokens to the request; True if a stop string ended it (its slot is then released)."""
        req = self.requests[slot]
        hit = req.add_tokens(ids, self.tokenizer if (req.stop or req.on_update) else None)
        if hit:
            self._release(slot, "stop")
        elif req.on_update is not None:
            req.on_update(req)
        return hit

    def _release(self, slot: int, reason: str) -> None:
        req = self.requests[slot]
        self.pages.release(self.slot_pages[slot])
        self.slot_pages[slot], self.requests[slot] = [], None
        self.reserved[slot] = self.prefilled[slot] = 0
        self.active[slot], self.lengths[slot], self.count[slot] = False, 0, 0
        if slot in self.prefilling:
            self.prefilling.remove(slot)
        self._finish(req, reason)

    def _finish(self, req: Request, reason: str) -> None:
        if req.tokens and self.tokenizer is not None and not req.stop:
            req.text = self.tokenizer.decode(req.tokens)
        req.finish(reason)
        self.stats["finished"] += 1
        if req.on_update is not None:
            req.on_update(req)

