"""Dynamic sampling (DAPO): keep only groups whose rewards differ, and refill the batch from further prompts.

A group whose G rewards are all equal has zero advantage for every sample, so it adds no gradient
but still counts in the loss's normaliser and the batch. These helpers run on the host, on a
"group batch": a dict of row-aligned sequences (lists or NumPy arrays, n * G rows laid out group
by group, as `lm.align.rollout.rollout` returns them) with a "rewards" entry.

    kept, n_dropped = filter_groups(rows, group_size=8)
    rows, stats = fill_groups(lambda attempt: sample_round(attempt), n_groups=16, group_size=8, max_tries=3)
    stats   # {"tries", "groups_dropped", "groups_short"}: log them
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def uniform_groups(rewards, group_size: int) -> np.ndarray:
    """bool [n_groups]: the group's rewards are all equal (no learning signal)."""
    r = np.asarray(rewards, np.float64)
    if group_size < 1 or r.ndim != 1 or r.shape[0] % group_size:
        raise ValueError(f"rewards must be [n_groups * group_size] with group_size={group_size}, "
                         f"got shape {list(r.shape)}")
    g = r.reshape(-1, group_size)
    return np.all(g == g[:, :1], axis=1)


def _rows(batch: dict, index: np.ndarray) -> dict:
    return {k: (v[index] if isinstance(v, np.ndarray) else [v[i] for i in index]) for k, v in batch.items()}


def _group_rows(groups: np.ndarray, group_size: int) -> np.ndarray:
    return (np.asarray(groups, np.int64)[:, None] * group_size + np.arange(group_size)).reshape(-1)


def _concat(parts: list[dict]) -> dict:
    keys = parts[0].keys()
    return {k: (np.concatenate([p[k] for p in parts]) if isinstance(parts[0][k], np.ndarray)
                else [x for p in parts for x in p[k]]) for k in keys}


def _check(batch: dict) -> int:
    if "rewards" not in batch:
        raise ValueError(f"a group batch needs a 'rewards' entry; got keys {sorted(batch)}")
    n = len(batch["rewards"])
    bad = {k: len(v) for k, v in batch.items() if len(v) != n}
    if bad:
        raise ValueError(f"every entry of a group batch must have {n} rows (one per reward), got {bad}")
    return n


def filter_groups(batch: dict, group_size: int) -> tuple[dict, int]:
    """(the batch without its uniform-reward groups, how many groups were dropped)."""
    _check(batch)
    uniform = uniform_groups(batch["rewards"], group_size)
    return _rows(batch, _group_rows(np.flatnonzero(~uniform), group_size)), int(uniform.sum())


def fill_groups(sample: Callable[[int], dict], n_groups: int, group_size: int,
                max_tries: int) -> tuple[dict, dict]:
    """Call `sample(attempt)` (attempt 0, 1, ...; each returns a group batch, e.g. a rollout of fresh
    prompts) until `n_groups` groups with differing rewards are collected or `max_tries` calls are made.

    Returns (a batch of exactly n_groups groups, stats). Kept groups come first, in the order drawn;
    extra ones are discarded. If still short after max_tries, the batch is topped up with dropped
    groups (their advantages are zero, so they add no policy gradient) to keep the batch shape, and
    stats["groups_short"] says how many.
    """
    if n_groups < 1 or max_tries < 1:
        raise ValueError(f"n_groups and max_tries must be >= 1, got {n_groups} and {max_tries}")
    kept, spare, n_kept, dropped, tries = [], [], 0, 0, 0
    while n_kept < n_groups and tries < max_tries:
        batch = sample(tries)
        tries += 1
        _check(batch)
        uniform = uniform_groups(batch["rewards"], group_size)
        good = np.flatnonzero(~uniform)[: n_groups - n_kept]
        kept.append(_rows(batch, _group_rows(good, group_size)))
        n_kept += len(good)
        dropped += int(uniform.sum())
        if n_kept + sum(len(s["rewards"]) // group_size for s in spare) < n_groups:
            spare.append(_rows(batch, _group_rows(np.flatnonzero(uniform), group_size)))
    short = n_groups - n_kept
    if short:
        available = sum(len(s["rewards"]) // group_size for s in spare)
        if available < short:
            raise ValueError(f"{max_tries} sampling rounds gave {n_kept + available} groups in all, fewer than "
                             f"n_groups={n_groups}; each round should return at least n_groups groups")
        pad = _concat(spare)
        kept.append(_rows(pad, _group_rows(np.arange(short), group_size)))
    return _concat(kept), {"tries": tries, "groups_dropped": dropped, "groups_short": short}
