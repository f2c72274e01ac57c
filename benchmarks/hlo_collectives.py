"""Collective operations of a compiled XLA program, read from its HLO text.

    ops = collectives(jitted.lower(*args).compile().as_text())

Each op: kind (all-reduce, all-gather, reduce-scatter, collective-permute,
all-to-all), the bytes of its result per device, the size of its device
group, and how many times it runs per call: ops inside `while` bodies (scans)
count once per trip, with the trip count read from the loop condition's
bound. `ring_bytes` is what one device sends under the ring algorithms the
textbook counts assume.
"""

from __future__ import annotations

import dataclasses
import math
import re

KINDS = ("all-reduce", "all-gather", "reduce-scatter", "collective-permute", "all-to-all")
DTYPE_BYTES = {"f64": 8, "s64": 8, "u64": 8, "f32": 4, "s32": 4, "u32": 4, "bf16": 2, "f16": 2, "s16": 2, "u16": 2,
               "s8": 1, "u8": 1, "pred": 1}
_HEADER = re.compile(r"^(?:ENTRY\s+)?%([\w.\-]+)\s*\(.*\{\s*$")
_OP = re.compile(r"^\s*(?:ROOT\s+)?%[\w.\-]+ = (.+?) (" + "|".join(KINDS) + r")(-start)?\(")
_ARRAY = re.compile(r"\b(" + "|".join(DTYPE_BYTES) + r")\[([\d,]*)\]")


@dataclasses.dataclass
class Collective:
    kind: str
    bytes: int  # result bytes per device (for reduce-scatter: the scattered piece)
    group: int  # devices taking part together
    count: int  # executions per call of the program

    @property
    def ring_bytes(self) -> float:
        """Bytes one device sends per execution (ring all-reduce = reduce-scatter + all-gather)."""
        n = self.group
        if n <= 1:
            return 0.0
        return {"all-reduce": 2 * (n - 1) / n * self.bytes, "all-gather": (n - 1) / n * self.bytes,
                "reduce-scatter": (n - 1) * self.bytes, "all-to-all": (n - 1) / n * self.bytes,
                "collective-permute": float(self.bytes)}[self.kind]


def _bytes(shape_text: str, kind: str, is_start: bool) -> int:
    arrays = [DTYPE_BYTES[d] * math.prod(int(x) for x in dims.split(",") if x)
              for d, dims in _ARRAY.findall(shape_text)]
    if is_start and kind in ("all-gather", "collective-permute") and len(arrays) >= 2:
        return arrays[-1]  # async start ops return (operand, result)
    return sum(arrays)


def _group(line: str) -> int:
    if m := re.search(r"replica_groups=\{\{([\d,]*)\}", line):
        return len(m.group(1).split(","))
    if m := re.search(r"replica_groups=\[[\d,]*?(\d+)\]<=", line):  # iota form [groups, size]<=[n]
        return int(m.group(1))
    if m := re.search(r"replica_groups=mesh\[([^\]]*)\]\s*\{([^}]*)\}", line):  # mesh form: axes named
        sizes = dict(re.findall(r"'(\w+)'=(\d+)", m.group(1)))
        return math.prod(int(sizes[a]) for a in re.findall(r"'(\w+)'", m.group(2)))
    if "source_target_pairs" in line:
        return 2
    return 1


def collectives(hlo: str) -> list[Collective]:
    """Every collective of the module with its executions per call (while loops unrolled by trip count)."""
    comps: dict[str, list[str]] = {}
    entry, current = None, None
    for line in hlo.splitlines():
        if m := _HEADER.match(line):
            current = m.group(1)
            comps[current] = []
            if line.startswith("ENTRY"):
                entry = current
        elif line.startswith("}"):
            current = None
        elif current is not None:
            comps[current].append(line)
    mult = {entry: 1}
    order = [entry]
    for comp in order:  # breadth-first from the entry: callers before callees
        for line in comps.get(comp, ()):
            if " while(" in line and (m := re.search(r"condition=%([\w.\-]+), body=%([\w.\-]+)", line)):
                condition = "\n".join(comps.get(m.group(1), ()))
                bounds = [int(c) for c in re.findall(r"s32\[\] constant\((\d+)\)", condition)]
                trips = max(bounds) if bounds else 1
                callees = [(m.group(2), trips)]
            else:
                callees = [(c, 1) for c in
                           re.findall(r"(?:calls|to_apply|true_computation|false_computation)=%([\w.\-]+)", line)]
                if m := re.search(r"branch_computations=\{([^}]*)\}", line):
                    callees += [(c, 1) for c in re.findall(r"%([\w.\-]+)", m.group(1))]
            for callee, k in callees:
                if callee in comps:
                    if callee not in mult:
                        order.append(callee)
                    mult[callee] = mult.get(callee, 0) + mult[comp] * k
    out = []
    for comp, lines in comps.items():
        for line in lines:
            if m := _OP.match(line):
                kind = m.group(2)
                sent = _bytes(m.group(1), kind, bool(m.group(3)))
                out.append(Collective(kind, sent, _group(line), mult.get(comp, 1)))
    return out
