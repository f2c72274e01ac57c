"""experiments.grpo_compare: token counting, accuracy at a token budget, the table's intervals, the
section writer, the countdown task it defines, the variants' configs, and one tiny run end to end."""

import dataclasses
import json
import math

import numpy as np
import pytest

from experiments.grpo_compare import (TASKS, VARIANTS, CompareConfig, accuracy_at, format_table, generated_tokens,
                                      problems, token_curve, variant_config, write_section)
from experiments.align_arithmetic import byte_tokenizer
from experiments.grpo_compare import LOSSES
from lm.eval import verifiers

T_975_DF2 = 4.302652729911275  # Student t 97.5% quantile, 2 degrees of freedom


def _history(lengths, tries, evals):
    """A grpo_metrics.jsonl history: one train record per step, evaluation records at `evals` {step: acc}."""
    rows = [{"step": s, "eval_accuracy": a, "eval_n": 200} for s, a in evals.items()]
    rows += [{"step": k + 1, "response_tokens": ln, "tries": t, "reward": 0.5}
             for k, (ln, t) in enumerate(zip(lengths, tries))]
    return rows


def test_tokens_count_every_sampling_round_and_accuracy_is_read_at_or_before_the_budget():
    lengths, tries, rollout = [3.0, 3.5, 4.0, 2.5, 3.0, 3.25], [1, 2, 1, 3, 1, 2], 8
    curve = token_curve(_history(lengths, tries, {0: 0.1, 2: 0.2, 4: 0.3, 6: 0.4}), rollout)
    cum = np.cumsum(np.array(lengths) * np.array(tries) * rollout)  # independent: tokens after each step
    assert [c["step"] for c in curve] == [0, 2, 4, 6]
    assert [c["tokens"] for c in curve] == pytest.approx([0.0, cum[1], cum[3], cum[5]])
    assert accuracy_at(curve, cum[3]) == 0.3  # the evaluation at exactly the budget counts
    assert accuracy_at(curve, cum[3] - 1) == 0.2  # one token short: the one before
    assert accuracy_at(curve, 1e12) == 0.4
    assert generated_tokens({"sampled_tokens": 123.0, "response_tokens": 9.0, "tries": 2}, rollout) == 123.0
    with pytest.raises(ValueError, match="log every step"):
        token_curve([r for r in _history(lengths, tries, {0: 0.1, 6: 0.4}) if r.get("step") != 3], rollout)


def _result(task, variant, seed, accs, start=0.3):
    """A run whose evaluations land at 0, 500, 1000 tokens with accuracies `accs` (after the start's)."""
    curve = [{"step": 0, "tokens": 0.0, "accuracy": start}]
    curve += [{"step": 5 * (k + 1), "tokens": 500.0 * (k + 1), "accuracy": a} for k, a in enumerate(accs)]
    return {"task": task, "variant": variant, "seed": seed, "curve": curve, "tokens": 1000.0, "steps": 10,
            "seconds": 60.0, "config": {}, "provenance": {"commit": "abc1234", "dirty": [], "load": 3.0,
                                                          "machine": "Test CPU, 2 cores", "date": "2026-12-02 14:00"}}


def test_table_gives_means_t_intervals_and_paired_differences_from_grpo():
    config = CompareConfig(tasks=("arithmetic",), variants=("grpo", "dapo"), token_budget=1000, checkpoints=2)
    grpo = {0: [0.40, 0.50], 1: [0.30, 0.42], 2: [0.50, 0.61]}
    dapo = {0: [0.41, 0.55], 1: [0.35, 0.49], 2: [0.52, 0.60]}
    results = [_result("arithmetic", "grpo", s, a) for s, a in grpo.items()]
    results += [_result("arithmetic", "dapo", s, a) for s, a in dapo.items()]
    lines = format_table(config, results).splitlines()
    final = [x for x in lines if x.startswith("| dapo | 1,000 |")][0]
    values = [55.0, 49.0, 60.0]
    half = T_975_DF2 * np.std(values, ddof=1) / math.sqrt(3)
    assert final == (f"| dapo | 1,000 | 55.0 | 49.0 | 60.0 | {np.mean(values):.1f} | "
                     f"[{np.mean(values) - half:.1f}, {np.mean(values) + half:.1f}] |")
    diff = np.array(values) - [50.0, 42.0, 61.0]
    half = T_975_DF2 * np.std(diff, ddof=1) / math.sqrt(3)
    row = [x for x in lines if x.startswith("| dapo - grpo | 1,000 |")][0]
    assert row == (f"| dapo - grpo | 1,000 | +5.0 | +7.0 | -1.0 | {np.mean(diff):+.1f} | "
                   f"[{np.mean(diff) - half:+.1f}, {np.mean(diff) + half:+.1f}] |")
    assert "| start (SFT) | 0 | 30.0 | 30.0 | 30.0 | 30.0 |" in "\n".join(lines)
    assert "`abc1234` (clean)" in lines[-1] and "load 3.0-3.0" in lines[-1]
    mean_row = [x for x in lines if x.startswith("| dapo - grpo | mean of 2 |")][0]
    assert mean_row.startswith("| dapo - grpo | mean of 2 | +3.0 | +6.0 | +0.5 | +3.2 | [")  # over 500 and 1000


def test_section_is_appended_once_then_replaced_leaving_the_rest(tmp_path):
    path = tmp_path / "align.md"
    path.write_text("# head\n<!-- align_seeds:start -->\nseeds\n<!-- align_seeds:end -->\n")
    write_section("first\n", path)
    write_section("second\n", path)
    text = path.read_text()
    assert text.startswith("# head\n<!-- align_seeds:start -->\nseeds\n<!-- align_seeds:end -->\n")
    assert text.count("<!-- grpo_compare:start -->") == 1 and "second" in text and "first" not in text


def test_countdown_problems_fit_the_context_score_their_own_solution_and_avoid_held_out_prompts():
    spec, tok = TASKS["countdown"], byte_tokenizer()
    held, train = problems(spec, "test", 1000, 0), problems(spec, "train", 3000, 1)
    assert not {spec.task.prompt_text(p) for p in train} & {spec.task.prompt_text(p) for p in held}
    for p in train[:300] + held[:300]:
        target = spec.task.target_ids(tok, p)
        assert len(target) <= spec.longest_answer <= spec.max_new_tokens
        assert len(spec.task.prompt_ids(tok, p)) + spec.max_new_tokens <= spec.context_length
        assert spec.task.score(tok.decode(target[:-1]), p) == 1.0
        assert verifiers.countdown_reward(p["solution"], p["numbers"], p["target"]) == 1.0
    assert max(len(spec.task.target_ids(tok, p)) for p in train) == spec.longest_answer  # the bound is tight


def test_variants_differ_only_in_their_loss_options():
    config, spec = CompareConfig(), TASKS["arithmetic"]
    configs = {v: variant_config(config, spec, v, seed=3, steps=7) for v in VARIANTS}
    for v, c in configs.items():
        expected = LOSSES[v]
        if expected.truncation == "penalty":  # only answers longer than any correct one are penalised
            expected = dataclasses.replace(expected, overlong_cache=spec.max_new_tokens - spec.longest_answer)
        assert c.loss == expected
        # dynamic sampling's steps draw several rounds: they are evaluated every step to keep the token grid
        eval_every = 1 if c.loss.dynamic_sampling else config.grpo.train.eval_every
        assert c.train.eval_every == eval_every
        assert dataclasses.replace(c, loss=configs["grpo"].loss, train=configs["grpo"].train) == configs["grpo"]
        assert dataclasses.replace(c.train, eval_every=configs["grpo"].train.eval_every) == configs["grpo"].train
        assert c.train.seed == 3 and c.train.steps == 7 and c.max_new_tokens == spec.max_new_tokens
    assert configs["dapo"].loss.dynamic_sampling and not configs["grpo"].loss.dynamic_sampling


def test_a_run_trains_in_resumed_chunks_until_its_budget_and_is_reused(tmp_path, monkeypatch):
    """run_variant's budget loop against a stand-in train_grpo that logs what a run of `steps` steps would:
    answers of 3 or 4 tokens, and for DAPO 1-3 sampling rounds per step."""
    import experiments.grpo_compare as gc
    import lm.align.checkpoint
    import lm.align.grpo_loop

    calls = []

    def fake_train_grpo(params, model, tok, task, train, grpo, run_dir, *, eval_problems, eval_batch_size, options):
        path = run_dir / "grpo_metrics.jsonl"
        rows = [json.loads(x) for x in path.read_text().splitlines()] if options.resume else []
        assert options.resume != options.overwrite  # the first chunk starts afresh, the others continue
        start = max((r["step"] for r in rows), default=0)
        calls.append((start, grpo.train.steps, grpo.train.save_every))
        if not rows:
            rows.append({"step": 0, "eval_accuracy": 0.25})
        for k in range(start + 1, grpo.train.steps + 1):
            rows.append({"step": k, "response_tokens": 3.0 + k % 2, "tries": 1 + (k % 3 if grpo.loss.dynamic_sampling
                                                                                   else 0)})
            if k % grpo.train.eval_every == 0 or k == grpo.train.steps:
                rows.append({"step": k, "eval_accuracy": 0.25 + k / 1000})
        run_dir.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))

    monkeypatch.setattr(gc, "starting_policy", lambda config, task, seed: tmp_path / "start")
    monkeypatch.setattr(lm.align.checkpoint, "load_policy", lambda path: (None, None, None))
    monkeypatch.setattr(lm.align.grpo_loop, "train_grpo", fake_train_grpo)
    config = CompareConfig(tasks=("arithmetic",), token_budget=20_000, n_train=100, out=str(tmp_path))
    rollout = config.grpo.rollout_size
    for variant in ("grpo", "dapo"):
        calls.clear()
        r = gc.run_variant(config, "arithmetic", 0, variant)
        per_step = [(3.0 + k % 2) * rollout * (1 + (k % 3 if variant == "dapo" else 0)) for k in range(1, 100)]
        cum = np.cumsum(per_step)
        assert 20_000 <= r["tokens"] == cum[r["steps"] - 1]  # every generated token counted, budget reached
        assert r["tokens"] - 20_000 < 3 * max(per_step)  # and stopped soon after it (chunks end near the budget)
        assert len(calls) >= 2 and calls[0][0] == 0 and all(b[0] == a[1] for a, b in zip(calls, calls[1:]))
        assert all(save == steps for _, steps, save in calls)  # a checkpoint at each chunk's end, to resume from
        last = max(c["step"] for c in r["curve"] if c["tokens"] <= 20_000)
        assert accuracy_at(r["curve"], 20_000) == 0.25 + last / 1000 and cum[last - 1] <= 20_000 < cum[last + 4]
    assert gc.run_variant(dataclasses.replace(config, run=False), "arithmetic", 0, "dapo") == r
    with pytest.raises(ValueError, match="another config"):
        gc.run_variant(dataclasses.replace(config, token_budget=30_000), "arithmetic", 0, "dapo")


def test_a_stored_config_matches_when_only_fields_added_since_differ():
    from experiments.grpo_compare import same_config

    stored = {"grpo": {"lr": 1e-4, "loss": {"clip": 0.2}}, "budget": 10}
    assert same_config(stored, {"grpo": {"lr": 1e-4, "loss": {"clip": 0.2, "new": "x"}, "backend": "b"}, "budget": 10})
    assert not same_config(stored, {"grpo": {"lr": 1e-4, "loss": {"clip": 0.28}}, "budget": 10})  # a value changed
    assert not same_config(stored, {"grpo": {"lr": 1e-4}, "budget": 10})  # a recorded field is gone


@pytest.mark.slow
def test_tiny_comparison_end_to_end(tmp_path):
    """Starting policy, two variants to a small token budget (in chunks), result files, table, plot, and a
    second call that reuses every piece."""
    from experiments.grpo_compare import _grpo, run_compare

    grpo = _grpo()
    grpo = dataclasses.replace(grpo, prompts_per_step=2, group_size=4,
                               train=dataclasses.replace(grpo.train, batch_size=8, eval_every=2))
    results = tmp_path / "align.md"
    results.write_text("# kept\n")
    config = CompareConfig(tasks=("arithmetic",), variants=("grpo", "dapo"), seeds=(0,), token_budget=120,
                           checkpoints=2, grpo=grpo, n_train=200, n_eval=16, d_model=16, n_layers=1,
                           pretrain_steps=2, pretrain_lines=300, sft_steps=2, out=str(tmp_path), results=str(results),
                           xla_cache="")  # the persistent cache is process-wide: a test leaves it alone
    out = run_compare(config)
    for r in out["results"]:
        history = [json.loads(x) for x in (tmp_path / "grpo-compare" / "arithmetic" / "seed0" / r["variant"] /
                                           "grpo_metrics.jsonl").read_text().splitlines()]
        train = [h for h in history if "response_tokens" in h]
        assert [h["step"] for h in train] == list(range(1, r["steps"] + 1))  # chunks continue one run
        assert r["tokens"] == pytest.approx(sum(generated_tokens(h, 8) for h in train)) and r["tokens"] >= 120
        assert r["curve"][0]["step"] == 0 and r["curve"][-1]["tokens"] == pytest.approx(r["tokens"])
    assert len({r["curve"][0]["accuracy"] for r in out["results"]}) == 1  # one shared starting policy
    assert results.read_text().startswith("# kept\n") and (tmp_path / "grpo_compare.png").stat().st_size > 0
    again = run_compare(dataclasses.replace(config, run=False))
    assert again["table"] == out["table"]
