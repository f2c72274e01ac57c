"""One generation request as the engine tracks it: prompt, settings, tokens so far, text, timing.

    req = Request(prompt=[5, 6, 7], sampling=SamplingConfig(temperature=0.7, seed=3), stop=("\\n\\n",))
    engine.submit(req); ...; req.tokens, req.text, req.finish_reason

`stop` strings need the engine's tokenizer: the decoded completion is checked as tokens arrive,
and the text is cut before the first stop string (the tokens keep the one that completed it).
`stream_text()` gives the text that is safe to show so far: never a piece that may still turn
out to begin a stop string, never half a UTF-8 character.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from collections.abc import Callable

from lm.inference.sampling import SamplingConfig

FINISH_REASONS = ("stop", "length", "cancelled")
_ids = itertools.count()


@dataclasses.dataclass(eq=False)
class Request:
    prompt: list[int]
    sampling: SamplingConfig = SamplingConfig()
    stop: tuple[str, ...] = ()
    on_update: Callable[[Request], None] | None = None  # called (engine thread) after new tokens and at the end
    id: int = dataclasses.field(default_factory=lambda: next(_ids))
    tokens: list[int] = dataclasses.field(default_factory=list)
    text: str = ""  # the completion decoded (with a tokenizer), cut before a stop string
    finish_reason: str | None = None  # one of FINISH_REASONS once finished
    submitted_at: float = dataclasses.field(default_factory=time.perf_counter)
    token_times: list[float] = dataclasses.field(default_factory=list)  # arrival time of each token
    done_event: threading.Event = dataclasses.field(default_factory=threading.Event, repr=False)

    def __post_init__(self):
        self.prompt = [int(t) for t in self.prompt]
        self.stop = tuple(self.stop)
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError(f"stop strings must be non-empty strings, got {self.stop!r}")

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    @property
    def first_token_at(self) -> float | None:
        return self.token_times[0] if self.token_times else None

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the request finishes (True) or `timeout` seconds pass (False)."""
        return self.done_event.wait(timeout)

    # ------------------------------------------------------------- engine side
    def add_tokens(self, ids: list[int], tokenizer=None) -> bool:
        """Append generated ids (with their arrival time); True if a stop string has now appeared."""
        now = time.perf_counter()
        self.tokens.extend(ids)
        self.token_times.extend([now] * len(ids))
        if tokenizer is None:
            return False
        self.text = tokenizer.decode(self.tokens)
        hits = [i for i in (self.text.find(s) for s in self.stop) if i >= 0]
        if hits:
            self.text = self.text[: min(hits)]
            return True
        return False

    def finish(self, reason: str) -> None:
        if reason not in FINISH_REASONS:
            raise ValueError(f"finish reason {reason!r} is not one of {FINISH_REASONS}")
        self.finish_reason = reason
        self.done_event.set()

    def stream_text(self) -> str:
        """The completion text it is safe to show now (all of it once finished)."""
        if self.done:
            return self.text
        text = self.text.rstrip("\ufffd")  # an incomplete UTF-8 character decodes as U+FFFD
        hold = 0
        for s in self.stop:  # a suffix that may grow into a stop string is held back
            for n in range(min(len(s) - 1, len(text)), 0, -1):
                if text.endswith(s[:n]):
                    hold = max(hold, n)
                    break
        return text[: len(text) - hold]
