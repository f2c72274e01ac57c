"""The one bridge from frozen config dataclasses to the command line.

Every field becomes a flag named after it (`--vocab-size` and `--vocab_size`
both work); fields of nested dataclasses are reached with dots, as in
`--model.d_model 512`. A bool flag alone means true (`--dry-run`, or
`--dry-run false`). Tuple fields take several values, or repeat a flag given
in the field's metadata (`metadata={"flag": "--special-token"}`). Validation
stays in each dataclass's `__post_init__` (with `check_positive` and
`check_choice`), so a bad value fails the same way from the command line and
from a notebook. Every experiment's `main` is one call:

    def main(argv=None) -> int:
        return cli(SFTRun, run_sft, argv, show=report)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def _unwrap_optional(tp):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _parse_bool(s: str) -> bool:
    low = s.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {s!r}")


def _converter(tp):
    tp, optional = _unwrap_optional(tp)
    if tp is bool:
        conv = _parse_bool
    elif tp in (int, float, str):
        conv = tp
    else:
        conv = str
    if optional:
        return lambda s: None if s.lower() == "none" else conv(s)
    return conv


def add_dataclass_args(parser: argparse.ArgumentParser, cls: type, prefix: str = "") -> None:
    """Add one flag per (nested) field of `cls`; defaults stay in the dataclass."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        base, _ = _unwrap_optional(tp)
        if dataclasses.is_dataclass(base):
            add_dataclass_args(parser, base, f"{prefix}{f.name}.")
            continue
        dest = f"{prefix}{f.name}"
        flags = [f"--{dest}"]
        if "_" in f.name:
            flags.append(f"--{prefix}{f.name.replace('_', '-')}")
        if "flag" in f.metadata:
            flags.insert(0, f.metadata["flag"])
        helptext = f.metadata.get("help", "")
        default = f.default if f.default is not dataclasses.MISSING else None
        if typing.get_origin(base) is tuple:
            elem = (typing.get_args(base) or (str,))[0]
            if "flag" in f.metadata:
                parser.add_argument(*flags, dest=dest, action="append", type=_converter(elem),
                                    default=None, help=f"{helptext} (repeatable; default {default})")
            else:
                parser.add_argument(*flags, dest=dest, nargs="*", type=_converter(elem),
                                    default=None, help=f"{helptext} (default {default})")
        elif base is bool:  # `--resume` alone is `--resume true`
            parser.add_argument(*flags, dest=dest, type=_converter(tp), default=None, nargs="?", const=True,
                                metavar="BOOL", help=f"{helptext} (default {default})")
        else:
            parser.add_argument(*flags, dest=dest, type=_converter(tp), default=None,
                                metavar=base.__name__.upper() if isinstance(base, type) else "VALUE",
                                help=f"{helptext} (default {default})")


def dataclass_from_args(cls: type[T], args: argparse.Namespace, prefix: str = "", base: T | None = None) -> T:
    """Build `cls` from parsed flags, starting from `base` (or the defaults)."""
    hints = typing.get_type_hints(cls)
    values = vars(args)
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        sub, optional = _unwrap_optional(hints[f.name])
        if dataclasses.is_dataclass(sub):
            inner = getattr(base, f.name) if base is not None else None
            nested = f"{prefix}{f.name}."
            given = any(k.startswith(nested) and v is not None for k, v in values.items())
            if optional and inner is None and not given:
                continue  # an optional config that is off (None) stays off unless one of its flags is given
            changes[f.name] = dataclass_from_args(sub, args, nested, inner)
            continue
        v = values.get(f"{prefix}{f.name}")
        if v is not None:
            changes[f.name] = tuple(v) if isinstance(v, list) else v
    if base is not None:
        return dataclasses.replace(base, **changes)
    return cls(**changes)


def to_dict(config) -> dict:
    """A JSON-ready dict of a (nested) config dataclass."""
    return dataclasses.asdict(config)


def from_dict(cls: type[T], data: dict) -> T:
    """Inverse of `to_dict`; unknown keys are an error naming them."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {sorted(unknown)}; valid fields: {sorted(names)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        v = data[f.name]
        sub, _ = _unwrap_optional(hints[f.name])
        if dataclasses.is_dataclass(sub) and isinstance(v, dict):
            v = from_dict(sub, v)
        elif typing.get_origin(sub) is tuple and isinstance(v, list):
            v = tuple(v)
        kwargs[f.name] = v
    return cls(**kwargs)


def format_config(config) -> str:
    """Readable multi-line rendering for logs."""
    return json.dumps(to_dict(config), indent=2, default=str)


def check_positive(obj, *names: str, zero: bool = False) -> None:
    """Raise a ValueError naming `Class.field` when a field is not a positive integer (or >= 0 with `zero`)."""
    for name in names:
        v = getattr(obj, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < (0 if zero else 1):
            raise ValueError(f"{type(obj).__name__}.{name} must be a {'non-negative' if zero else 'positive'} "
                             f"integer, got {v!r}")


def check_choice(obj, name: str, choices) -> None:
    """Raise a ValueError naming `Class.field` and the valid values when a field is not one of `choices`."""
    v = getattr(obj, name)
    if v not in choices:
        raise ValueError(f"{type(obj).__name__}.{name} must be one of {tuple(choices)}, got {v!r}")


def parse_config(cls: type[T], argv=None, base: Callable[[argparse.Namespace], T] | None = None) -> T:
    """Flags -> `cls`. Unset fields keep `base(args)` (default `cls()`: nested configs keep their
    default_factory values, such as fine-tuning optimizer settings); the module docstring is the help."""
    parser = argparse.ArgumentParser(description=sys.modules[cls.__module__].__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataclass_args(parser, cls)
    args = parser.parse_args(argv)
    return dataclass_from_args(cls, args, base=base(args) if base is not None else cls())


ERRORS = (ValueError, FileNotFoundError, FileExistsError, FloatingPointError, ImportError)


def cli(cls: type[T], run: Callable[[T], Any], argv=None, show: Callable[[Any], None] | None = None,
        base: Callable[[argparse.Namespace], T] | None = None) -> int:
    """An experiment's `main`: parse flags into `cls`, `run` it, `show` the result. Bad input, a missing
    file or a diverged run prints `error: ...` and returns 2; success returns 0."""
    try:
        result = run(parse_config(cls, argv, base))
    except ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if show is not None:
        show(result)
    return 0
