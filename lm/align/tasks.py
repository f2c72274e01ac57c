"""Tasks: how a problem becomes a prompt, a supervised target and a reward.

    task = ARITHMETIC                       # "37+58=" -> "95<|endoftext|>", arithmetic_reward
    ids = task.prompt_ids(tokenizer, problem); target = task.target_ids(tokenizer, problem)
    task.score(completion_text, problem)    # 1.0 or 0.0

A tokenizer is anything with `encode(str) -> ids`, `decode(ids) -> str` and
`special_ids: {str: id}` (ours, or lm.interop's wrapper of a Hugging Face
tokenizer, which adds `apply_chat_template` for `chat=True` tasks).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from lm.eval import verifiers
from lm.eval.gsm8k import load_gsm8k

REWARDS = ("arithmetic", "final_number", "gsm8k", "countdown")
SOURCES = ("arithmetic", "gsm8k", "countdown")


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    reward: str = "arithmetic"  # which verifier scores a completion (one of REWARDS)
    source: str = "arithmetic"  # where problems come from (one of SOURCES; see task_problems)
    reverse_digits: bool = True  # generated arithmetic: answers least-significant digit first
    prompt_template: str = "{question}"  # plain prompts; fields come from the problem dict
    target_template: str = "{answer}"  # the supervised response, before the end token
    end_token: str = "<|endoftext|>"  # ends every target; generation stops at it
    chat: bool = False  # wrap the prompt as a user turn of the tokenizer's chat template
    system: str = ""  # optional system message for chat prompts

    def __post_init__(self):
        if self.reward not in REWARDS:
            raise ValueError(f"Task.reward must be one of {REWARDS}, got {self.reward!r}")
        if self.source not in SOURCES:
            raise ValueError(f"Task.source must be one of {SOURCES}, got {self.source!r}")

    def prompt_text(self, problem: dict) -> str:
        return self.prompt_template.format(**problem)

    def prompt_ids(self, tokenizer, problem: dict) -> list[int]:
        text = self.prompt_text(problem)
        if not self.chat:
            return list(tokenizer.encode(text))
        if not hasattr(tokenizer, "apply_chat_template"):
            raise ValueError(f"task {self.name!r} uses the chat template, which this tokenizer lacks; "
                             "use a plain task or a tokenizer from lm.interop")
        messages = ([{"role": "system", "content": self.system}] if self.system else []) + \
            [{"role": "user", "content": text}]
        out = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        return list(tokenizer.encode(out)) if isinstance(out, str) else [int(t) for t in out]

    def stop_id(self, tokenizer) -> int:
        if self.end_token not in tokenizer.special_ids:
            raise ValueError(f"task {self.name!r} ends responses with {self.end_token!r}, which is not a special "
                             f"token of this tokenizer (it has {sorted(tokenizer.special_ids)})")
        return tokenizer.special_ids[self.end_token]

    def target_ids(self, tokenizer, problem: dict) -> list[int]:
        """The supervised response: target_template filled in, then the end token."""
        return list(tokenizer.encode(self.target_template.format(**problem))) + [self.stop_id(tokenizer)]

    def score(self, completion: str, problem: dict) -> float:
        if self.reward == "arithmetic":
            return verifiers.arithmetic_reward(completion, problem["answer"], exact=problem.get("reverse", False))
        if self.reward in ("gsm8k", "final_number"):  # the number after '####', else the last number
            return verifiers.gsm8k_reward(completion, problem["answer"])
        return verifiers.countdown_reward(completion, problem["numbers"], problem["target"])


# Plain "37+58=" -> "59" (the sum's digits reversed): the format of our arithmetic pretraining text.
ARITHMETIC = Task("arithmetic")
# The same problems as question/answer text.
ARITHMETIC_QA = Task("arithmetic-qa", prompt_template="Q: What is {a} {op} {b}?\nA:", target_template=" {answer}")
# Ordinary sums for a chat model: the question as the user turn, scored by the last number of the reply.
ARITHMETIC_CHAT = Task("arithmetic-chat", reward="final_number", reverse_digits=False, chat=True,
                       end_token="<|im_end|>", prompt_template="What is {a} {op} {b}? Answer with just the number.")
# GSM8K with a chat model: the question as the user turn, the worked solution ending in "#### N" as the reply.
GSM8K_CHAT = Task("gsm8k-chat", reward="gsm8k", source="gsm8k", chat=True, end_token="<|im_end|>",
                  prompt_template="{question}\nGive the final answer on its own line as '#### <number>'.")
TASKS = {t.name: t for t in (ARITHMETIC, ARITHMETIC_QA, ARITHMETIC_CHAT, GSM8K_CHAT)}


HELD_OUT_SEED = 12345  # arithmetic evaluation problems; training problems exclude these questions
HELD_OUT_MAX = 1000


def task_problems(task: Task, split: str, n: int, data_dir: str = "", seed: int = 1) -> list[dict]:
    """`n` problems for `task`: generated arithmetic ("test" is a fixed held-out set; "train" never
    repeats a question of the 1000 held-out ones) or GSM8K read from `data_dir`/{train,test}.jsonl."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if task.source == "gsm8k":
        if not data_dir:
            raise ValueError(f"task {task.name!r} reads GSM8K: pass its directory (holding train.jsonl and "
                             "test.jsonl), e.g. ../shared/data/corpora/a5_eval_data/gsm8k")
        return load_gsm8k(Path(data_dir) / f"{split}.jsonl")[:n]
    if task.source == "countdown":
        return verifiers.countdown_problems(n, seed=HELD_OUT_SEED if split == "test" else seed)
    rev = task.reverse_digits
    if split == "test":
        if n > HELD_OUT_MAX:
            raise ValueError(f"at most {HELD_OUT_MAX} held-out arithmetic problems, asked for {n}")
        return verifiers.arithmetic_problems(n, seed=HELD_OUT_SEED, reverse=rev)  # a prefix of the 1000 below
    held = verifiers.arithmetic_problems(HELD_OUT_MAX, seed=HELD_OUT_SEED, reverse=rev)
    return verifiers.arithmetic_problems(n, seed=seed, reverse=rev, exclude={p["question"] for p in held})
