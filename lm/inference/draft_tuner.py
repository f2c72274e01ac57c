"""Choosing the draft length of speculative decoding from measurements, or turning speculation off.

    tuner = DraftTuner()
    k = tuner.choose()                          # 0: decode plainly for a while; k > 0: speculate k at a time
    tuner.observe_plain(seconds, tokens)        # after a plain segment
    tuner.observe_rounds(k, seconds, rounds, accepted, rejected)   # after a speculative one

Speculation pays when a round emits more tokens than it costs plain steps. The tuner measures the
cost of a plain token and of a round at each draft length it has tried (wall time, as it runs),
and the draft's per-token acceptance rate a, pooled over rounds (a round that accepts n < k
proposals is one rejection): a round of k proposals emits (1 - a^(k+1)) / (1 - a) tokens on
average. It speculates with the measured k of best predicted tokens per second when that beats plain
decoding by `margin`, and otherwise decodes plainly.

What finding out costs is bounded, so that a fresh tuner on a short generation is never much slower
than plain decoding:
- it starts plain (that measures the cost speculation has to beat), then probes the cheapest length
  for a few rounds: a round emits at least one token, so a losing probe costs at most
  `probe_rounds` x (round cost - one plain step);
- it climbs one length at a time, only while the next length's prediction beats both plain
  decoding (by the margin) and the best measured length. The prediction takes the acceptance rate
  measured so far less one standard error (a few lucky rounds of a poor draft must not buy a longer,
  costlier probe) and a lower bound on the untried round's cost: at least the longest shorter measured
  round, and the line through the two longest shorter measured rounds extended to k (a round is a
  fixed cost plus k + 1 draft steps and a (k + 1)-token target pass; a target pass that costs the
  same for any short length, as on a GPU, only makes the bound looser). A high acceptance rate thus
  moves on to longer drafts even when the cheapest one only breaks even, and a low one stops early;
- after speculation loses, it decodes plainly for `reprobe_after` tokens before probing again (the
  text, and with it the acceptance rate, can change), twice as long after each further loss.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class DraftTuner:
    ks: tuple[int, ...] = (1, 2, 3, 4, 6, 8)  # draft lengths it may use
    plain_segment: int = 16  # tokens per plain segment (the first one measures the cost to beat)
    probe_rounds: int = 4  # rounds per probe of a draft length
    reprobe_after: int = 128  # plain tokens before speculation is tried again (doubles after each further loss)
    margin: float = 0.03  # speculation must be predicted this much faster than plain decoding to be used
    plain_time: float = 0.0
    plain_tokens: int = 0
    round_time: dict = dataclasses.field(default_factory=dict)  # k -> seconds over its timed rounds
    rounds: dict = dataclasses.field(default_factory=dict)  # k -> timed rounds
    accepted: int = 0  # draft tokens accepted
    rejected: int = 0  # rounds that ended at a rejection
    since_probe: int | None = None  # plain tokens since the last speculative segment (None: never probed)
    backoff: int = 0
    losses: int = 0  # speculative segments after which speculation no longer beat plain decoding
    history: list = dataclasses.field(default_factory=list)  # the k of each segment, 0 for plain

    def __post_init__(self):
        if not self.ks or any(not isinstance(k, int) or k < 1 for k in self.ks):
            raise ValueError(f"DraftTuner.ks must be positive draft lengths, got {self.ks!r}")
        if self.plain_segment < 1 or self.probe_rounds < 1 or self.reprobe_after < 1 or self.margin < 0:
            raise ValueError(f"DraftTuner needs plain_segment, probe_rounds, reprobe_after >= 1 and margin >= 0, "
                             f"got {self.plain_segment}, {self.probe_rounds}, {self.reprobe_after}, {self.margin}")
        self.ks = tuple(sorted(set(self.ks)))
        self.backoff = self.backoff or self.reprobe_after

    @property
    def acceptance(self) -> float:
        """Per-token acceptance rate, (accepted + 1) / (accepted + rejected + 2) (0.5 before any round)."""
        return (self.accepted + 1) / (self.accepted + self.rejected + 2)

    @property
    def plain_speed(self) -> float:
        """Measured plain tokens per second (0 before any plain segment was timed)."""
        return self.plain_tokens / self.plain_time if self.plain_time > 0 else 0.0

    def expected_tokens(self, k: int, acceptance: float | None = None) -> float:
        """Mean tokens a round of k proposals emits at the current acceptance rate (or at `acceptance`)."""
        a = self.acceptance if acceptance is None else acceptance
        return (1 - a ** (k + 1)) / (1 - a)

    @property
    def cautious_acceptance(self) -> float:
        """The acceptance rate less one standard error of it: what a climb to an untried length is predicted
        with, so that a few lucky probe rounds of a poor draft do not buy a longer, costlier probe."""
        a, n = self.acceptance, self.accepted + self.rejected + 2
        return max(0.0, a - (a * (1 - a) / n) ** 0.5)

    def round_cost(self, k: int) -> tuple[float, bool]:
        """(seconds per round, measured?): measured, or a lower bound: at least a plain step and the longest
        shorter measured length's round, and, from two shorter measured lengths, their cost line extended
        to k (a round is a fixed cost plus k + 1 draft steps and a (k + 1)-token target pass)."""
        if self.rounds.get(k):
            return self.round_time[k] / self.rounds[k], True
        shorter = [(j, self.round_time[j] / self.rounds[j]) for j in self.ks if j < k and self.rounds.get(j)]
        bound = max([self.plain_time / self.plain_tokens, *(c for _, c in shorter)])
        if len(shorter) >= 2:
            (i, ci), (j, cj) = shorter[-2:]
            bound = max(bound, cj + max(0.0, (cj - ci) / (j - i)) * (k - j))
        return bound, False
    def speed(self, k: int) -> tuple[float, bool]:
        """(predicted tokens per second of length k, measured?); when not measured, from the lower bound on
        its round cost and the cautious acceptance rate."""
        cost, measured = self.round_cost(k)
        return self.expected_tokens(k, None if measured else self.cautious_acceptance) / cost, measured

    def best(self) -> tuple[int, float]:
        """(measured length of highest predicted speed, that speed); (0, plain speed) if none was measured."""
        measured = {k: self.speed(k)[0] for k in self.ks if self.rounds.get(k)}
        if not measured:
            return 0, self.plain_speed
        k = max(measured, key=measured.get)
        return k, measured[k]

    def winning(self) -> bool:
        """Whether the best measured length beats plain decoding by the margin."""
        k, speed = self.best()
        return k > 0 and speed > self.plain_speed * (1 + self.margin)

    def choose(self) -> int:
        """The draft length for the next segment; 0 for plain decoding."""
        if not self.plain_tokens:
            return self._pick(0)
        best, best_speed = self.best()
        tried = [k for k in self.ks if self.rounds.get(k)]
        if not tried and self.since_probe is None:  # the first probe: the cheapest length
            return self._pick(self.ks[0])
        # Climb to the next length while its prediction beats both plain decoding and the best
        # measured length (a high acceptance rate makes a longer draft pay even when a shorter one does not).
        longer = [k for k in self.ks if tried and k > max(tried)]
        bar = max(best_speed, self.plain_speed * (1 + self.margin))
        if longer and self.speed(longer[0])[0] > bar:
            return self._pick(longer[0])
        if self.winning():
            return self._pick(best)
        if self.since_probe is not None and self.since_probe < self.backoff:
            return self._pick(0)
        return self._pick(best or self.ks[0])  # probe again the length that did best (the text may have changed)

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
        self.since_probe = 0
        if not self.winning():  # back to plain decoding: wait before the next probe, longer after each loss
            if self.losses:
                self.backoff *= 2
            self.losses += 1

    def observe_untimed(self, k: int, tokens: int, accepted: int = 0, rejected: int = 0) -> None:
        """A segment whose time is not its cost (it compiled): its acceptance still counts, and the next
        decision is the same one again (that length is still unmeasured)."""
        self.accepted += accepted
        self.rejected += rejected
        if k == 0 and self.since_probe is not None:
            self.since_probe += tokens
