"""How a training run is spread over devices: mesh axis sizes and the collective style.

A strategy is a choice of axis sizes; the rules table (`lm.parallel.rules`)
says what each axis shards. `data` alone is data parallelism, `fsdp` is fully
sharded data parallelism (ZeRO-3), `tensor` is Megatron tensor parallelism,
`pipe` is GPipe pipeline parallelism; any product of them is a combination.
All sizes 1 (the default) is plain single-device training, untouched.
"""

from __future__ import annotations

import dataclasses
import math

AXES = ("data", "fsdp", "tensor", "pipe")
MODES = ("jit", "ddp", "zero1")


@dataclasses.dataclass(frozen=True)
class ParallelConfig:
    """Mesh axis sizes (-1 = all devices the other axes leave) and how collectives are made.

    mode "jit": the compiler inserts collectives from the shardings (any mesh).
    mode "ddp" / "zero1": explicit `shard_map` data parallelism (gradients pmean'd)
    and a ZeRO-1 sharded optimizer; both want a mesh with only the `data` axis.
    """

    data: int = dataclasses.field(default=1, metadata={"help": "data-parallel axis size (-1: the rest)"})
    fsdp: int = dataclasses.field(default=1, metadata={"help": "fully sharded data-parallel axis size (-1: the rest)"})
    tensor: int = dataclasses.field(default=1, metadata={"help": "tensor-parallel axis size (-1: the rest)"})
    pipe: int = dataclasses.field(default=1, metadata={"help": "pipeline stages (-1: the rest)"})
    microbatches: int = dataclasses.field(default=0, metadata={
        "help": "pipeline microbatches per step (0: 2 x stages)"})
    mode: str = dataclasses.field(default="jit", metadata={"help": f"one of {MODES}"})

    def __post_init__(self):
        sizes = {a: getattr(self, a) for a in AXES}
        for axis, size in sizes.items():
            if not isinstance(size, int) or isinstance(size, bool) or (size < 1 and size != -1):
                raise ValueError(f"ParallelConfig.{axis} must be a positive integer or -1 (the rest), got {size!r}")
        if list(sizes.values()).count(-1) > 1:
            raise ValueError(f"at most one mesh axis may be -1 (the rest), got {sizes}")
        if self.mode not in MODES:
            raise ValueError(f"ParallelConfig.mode must be one of {MODES}, got {self.mode!r}")
        if not isinstance(self.microbatches, int) or self.microbatches < 0:
            raise ValueError(f"ParallelConfig.microbatches must be >= 0 (0: 2 x pipe), got {self.microbatches!r}")
        if self.mode != "jit" and any(sizes[a] != 1 for a in ("fsdp", "tensor", "pipe")):
            raise ValueError(f"mode={self.mode!r} is explicit data parallelism: use only --parallel.data "
                             f"(got {sizes}); use mode 'jit' for fsdp, tensor or pipe axes")

    @property
    def enabled(self) -> bool:
        """False for the default: one device, the unsharded training path."""
        return any(getattr(self, a) != 1 for a in AXES) or self.mode != "jit"

    def axis_sizes(self, n_devices: int) -> dict[str, int]:
        """Concrete sizes of all four axes for `n_devices` devices (-1 resolved)."""
        sizes = {a: getattr(self, a) for a in AXES}
        fixed = math.prod(s for s in sizes.values() if s != -1)
        if -1 in sizes.values():
            if n_devices % fixed:
                raise ValueError(f"the fixed mesh axes {sizes} use {fixed} devices, which does not divide the "
                                 f"{n_devices} devices available; pick sizes whose product divides {n_devices}")
            sizes = {a: (n_devices // fixed if s == -1 else s) for a, s in sizes.items()}
        total = math.prod(sizes.values())
        if n_devices % total:
            raise ValueError(f"a mesh of {sizes} needs {total} devices, which does not divide the {n_devices} "
                             "devices available; make the product of the axis sizes divide the device count "
                             "(or give one axis -1 to take the rest)")
        return sizes

    def stages_microbatches(self, n_devices: int) -> tuple[int, int]:
        pipe = self.axis_sizes(n_devices)["pipe"]
        return pipe, (self.microbatches or 2 * pipe)
