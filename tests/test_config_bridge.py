import argparse
import dataclasses

import pytest

from lm.config import add_dataclass_args, dataclass_from_args, from_dict, to_dict


@dataclasses.dataclass(frozen=True)
class Inner:
    d_model: int = 64
    dtype: str = "float32"
    window: int | None = None


@dataclasses.dataclass(frozen=True)
class Outer:
    inner: Inner = dataclasses.field(default_factory=Inner)
    vocab_size: int = 100
    lr: float = 1e-3
    resume: bool = False
    specials: tuple[str, ...] = dataclasses.field(default=("<eot>",), metadata={"flag": "--special"})

    def __post_init__(self):
        if self.vocab_size < 1:
            raise ValueError("vocab_size must be positive")


def parse(argv, base=None):
    p = argparse.ArgumentParser()
    add_dataclass_args(p, Outer)
    return dataclass_from_args(Outer, p.parse_args(argv), base=base)


def test_defaults_and_overrides():
    assert parse([]) == Outer()
    c = parse(["--inner.d_model", "512", "--vocab-size", "7", "--lr", "0.1", "--resume", "true",
               "--special", "<a>", "--special", "<b>", "--inner.window", "none"])
    assert c == Outer(inner=Inner(d_model=512), vocab_size=7, lr=0.1, resume=True, specials=("<a>", "<b>"))
    assert parse(["--inner.window", "16"]).inner.window == 16
    assert parse(["--resume"]).resume is True and parse(["--resume", "false", "--lr", "1"]).resume is False


def test_base_is_kept_for_unset_fields():
    base = Outer(inner=Inner(d_model=256, dtype="bfloat16"))
    assert parse(["--inner.d_model", "128"], base=base).inner == Inner(d_model=128, dtype="bfloat16")


def test_validation_runs_and_bad_values_fail():
    with pytest.raises(ValueError, match="vocab_size must be positive"):
        parse(["--vocab_size", "0"])
    with pytest.raises(SystemExit):
        parse(["--resume", "maybe"])


def test_dict_roundtrip_and_unknown_keys():
    c = Outer(inner=Inner(d_model=8), specials=("x",))
    assert from_dict(Outer, to_dict(c)) == c
    with pytest.raises(ValueError, match="unknown Outer field"):
        from_dict(Outer, {"nope": 1})


@dataclasses.dataclass(frozen=True)
class WithOptional:
    inner: Inner | None = None  # an optional nested config, off by default (as SFTConfig.lora)
    lr: float = 1e-3


def test_optional_nested_config_stays_off_unless_one_of_its_flags_is_given():
    p = argparse.ArgumentParser()
    add_dataclass_args(p, WithOptional)
    assert dataclass_from_args(WithOptional, p.parse_args([])) == WithOptional()
    assert dataclass_from_args(WithOptional, p.parse_args(["--lr", "0.5"])) == WithOptional(lr=0.5)
    on = dataclass_from_args(WithOptional, p.parse_args(["--inner.d_model", "8"]))
    assert on == WithOptional(inner=Inner(d_model=8))
    more = dataclass_from_args(WithOptional, p.parse_args(["--inner.dtype", "bfloat16"]), base=on)
    assert more.inner == Inner(d_model=8, dtype="bfloat16")
    assert from_dict(WithOptional, to_dict(on)) == on and from_dict(WithOptional, to_dict(WithOptional())).inner is None
