"""Choosing the draft length of speculative decoding from measurements, or turning speculation off.

    tuner = DraftTuner()
    k = tuner.choose()                          # 0: decode plainly for a while; k > 0: speculate k at a time
    tuner.observe_plain(seconds, tokens)        # after a plain segment
    tuner.observe_rounds(k, seconds, rounds, accepted, rejected)   # after a speculative one

Speculation pays when a round emits more tokens than it costs plain steps. The tuner measures the
cost of a plain token and of a round at each draft length it has tried (wall time, as it runs),
and the draft's per-token acceptance rate a, pooled over rounds (a round that accepts n < k
proposals is one rejection): a round of k proposals emits (1 - a^(k+1)) / (1 - a) tokens on
average. It speculates with the k of best predicted tokens per second when that beats plain
decoding, and otherwise decodes plainly. A length it has not tried is bounded from above (its
round costs at least as much as any shorter one's, and at least a plain step), so it is probed
only if even that bound could beat plain decoding. Probes are short, and after one that loses,
the next waits twice as long (the text, and with it the acceptance rate, can change), so the
price of finding out is a few percent at most.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class DraftTuner:
    ks: tuple[int, ...] = (1, 2, 3, 4, 6, 8)  # draft lengths it may use
    plain_segment: int = 32  # tokens per plain segment (between decisions)
    probe_rounds: int = 3  # rounds per probe of a draft length
    reprobe_after: int = 64  # plain tokens before speculation is tried again (doubles after each losing probe)
    plain_time: float = 0.0
    plain_tokens: int = 0
    round_time: dict = dataclasses.field(default_factory=dict)  # k -> seconds over its timed rounds
    rounds: dict = dataclasses.field(default_factory=dict)  # k -> timed rounds
    accepted: int = 0  # draft tokens accepted
    rejected: int = 0  # rounds that ended at a rejection
    since_probe: int | None = None  # plain tokens since the last speculative segment (None: never probed)
    backoff: int = 0
    history: list = dataclasses.field(default_factory=list)  # the k of each segment, 0 for plain

    def __post_init__(self):
        if not self.ks or any(not isinstance(k, int) or k < 1 for k in self.ks):
            raise ValueError(f"DraftTuner.ks must be positive draft lengths, got {self.ks!r}")
        self.ks = tuple(sorted(set(self.ks)))
        self.backoff = self.backoff or self.reprobe_after

    @property
    def acceptance(self) -> float:
        """Per-token acceptance rate, (accepted + 1) / (accepted + rejected + 2) (0.5 before any round)."""
        return (self.accepted + 1) / (self.accepted + self.rejected + 2)

    def expected_tokens(self, k: int) -> float:
        """Mean tokens a round of k proposals emits at the current acceptance rate."""
        a = self.acceptance
        return (1 - a ** (k + 1)) / (1 - a)

    def round_cost(self, k: int) -> tuple[float, bool]:
        """(seconds per round, measured?): measured, or the lower bound from shorter lengths and plain steps."""
        if self.rounds.get(k):
            return self.round_time[k] / self.rounds[k], True
        shorter = [self.round_time[j] / self.rounds[j] for j in self.ks if j < k and self.rounds.get(j)]
        return max([self.plain_time / self.plain_tokens, *shorter]), False

    def speed(self, k: int) -> tuple[float, bool]:
        """(predicted tokens per second of length k, measured?); an upper bound when not measured."""
        cost, measured = self.round_cost(k)
        return self.expected_tokens(k) / cost, measured

    def choose(self) -> int:
        """The draft length for the next segment; 0 for plain decoding."""
        if not self.plain_tokens:
            return self._pick(0)
        plain = self.plain_tokens / self.plain_time
        speeds = {k: self.speed(k) for k in self.ks}
        measured = {k: s for k, (s, m) in speeds.items() if m}
        best = max(measured, key=measured.get, default=0)
        best_speed = measured.get(best, plain)
        if best_speed > plain:  # speculation wins: use it, or probe a length that might win by more
            promising = [k for k, (s, m) in speeds.items() if not m and s > best_speed]
            return self._pick(promising[0] if promising else best)
        if self.since_probe is not None and self.since_probe < self.backoff:
            return self._pick(0)
        if self.since_probe is None:  # the first probe: the cheapest length
            return self._pick(self.ks[0])
        k = max(self.ks, key=lambda k: speeds[k][0])
        if speeds[k][0] <= plain:  # not even the optimistic bound wins: wait longer before asking again
            self.since_probe, self.backoff = 0, 2 * self.backoff
            return self._pick(0)
        return self._pick(k)

    def _pick(self, k: int) -> int:
        self.history.append(k)
        return k

    def plain_steps(self) -> int:
        """Tokens to decode plainly before the next decision: a measuring segment, or all of them until the
        next probe is due (every decision costs a round trip to the host)."""
        if not self.plain_tokens or self.since_probe is None:
            return self.plain_segment
        return max(self.plain_segment, self.backoff - self.since_probe)

    def rounds_for(self, k: int) -> int:
        """Rounds to run in one segment of length k: a probe, or about a plain segment's worth of tokens."""
        if not self.rounds.get(k):
            return self.probe_rounds
        return max(self.probe_rounds, round(self.plain_segment / self.expected_tokens(k)))

    def observe_plain(self, seconds: float, tokens: int) -> None:
        self.plain_time += seconds
        self.plain_tokens += tokens
        if self.since_probe is not None:
            self.since_probe += tokens

    def observe_rounds(self, k: int, seconds: float, rounds: int, accepted: int, rejected: int) -> None:
        self.round_time[k] = self.round_time.get(k, 0.0) + seconds
        self.rounds[k] = self.rounds.get(k, 0) + rounds
        self.accepted += accepted
        self.rejected += rejected
        lost = self.speed(k)[0] <= self.plain_tokens / max(self.plain_time, 1e-12)
        if self.since_probe is not None and lost:
            self.backoff *= 2  # a probe that lost: wait longer before the next one
        self.since_probe = 0
