"""PII masking precision on real documentation and recall on planted items, before and after a change.

    python -m benchmarks.curation_pii [--baseline 5b55bae] [--list]

Runs the current `lm.curation.pii` and the version at `--baseline` (read with `git show`) over the
English pages of the Debian documentation packages (`benchmarks/curation_setup.sh`), counting masks
per kind, and printing every mask one version makes and the other does not (`--list` prints all of
them) so the difference can be judged by reading it. Then plants emails, phone numbers in common
formats and IPv4 addresses into those pages (a phone word before the undelimited forms, as people
write them) and reports the recall of each version.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import types
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_baseline(commit: str) -> types.ModuleType:
    src = subprocess.run(["git", "show", f"{commit}:lm/curation/pii.py"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    mod = types.ModuleType(f"pii_{commit}")
    exec(compile(src, f"pii@{commit}", "exec"), mod.__dict__)
    return mod


def english_pages() -> list[tuple[str, str]]:
    from lm.curation.extract import extract_text
    from benchmarks.warc_fixtures import debian_pages

    out = []
    for url, path, lang in debian_pages():
        if lang == "en":
            text, _ = extract_text(path.read_bytes(), "text/html", "utf-8")
            if text:
                out.append((url, text))
    return out


def masked_lines(mod, pages, kind: str) -> list[tuple[str, str, int]]:
    """(page, line, masks) for every line where `mod` masks something of `kind` (in mask_pii's order)."""
    fn = {"email": mod.mask_emails, "ip": mod.mask_ips, "phone": mod.mask_phone_numbers}[kind]
    out = []
    for url, text in pages:
        if kind != "email":
            text, _ = mod.mask_emails(text)
        if kind == "phone":
            text, _ = mod.mask_ips(text)
        for line in text.split("\n"):
            _, n = fn(line)
            if n:
                out.append((url.rsplit("/", 1)[-1], line.strip(), n))
    return out


def plant(pages, n: int, seed: int = 0) -> tuple[list[str], Counter]:
    """Insert `n` PII items at sentence ends of random pages; returns (texts, planted counts per kind)."""
    rng = random.Random(seed)
    texts = [t for _, t in pages]
    counts = Counter()
    for _ in range(n):
        kind = rng.choice(["email", "phone", "ip"])
        a, b, c = rng.randint(200, 999), rng.randint(200, 999), rng.randint(0, 9999)
        item = {
            "email": lambda: f"write to {rng.choice(['jane.roe', 'ops-team', 'x+news'])}@"
                             f"{rng.choice(['example.com', 'mail.example.org'])}",
            "phone": lambda: rng.choice([f"call {a}-{b}-{c:04d}", f"phone: ({a}) {b}-{c:04d}",
                                         f"tel. {a}.{b}.{c:04d}", f"call us at {a}{b}{c:04d}",
                                         f"fax {a} {b} {c:04d}", f"+1 {a} {b} {c:04d}",
                                         f"+44 20 {rng.randint(1000, 9999)} {rng.randint(1000, 9999)}"]),
            "ip": lambda: rng.choice(["the host", "from", "server", "address", "blocked"]) + " " + ".".join(
                str(rng.randint(0, 255)) for _ in range(4)),
        }[kind]()
        d = rng.randrange(len(texts))
        t = texts[d]
        pos = t.find(". ", rng.randrange(max(len(t), 1)))
        pos = len(t) if pos < 0 else pos + 1
        texts[d] = t[:pos] + f" Please {item} today." + t[pos:]
        counts[kind] += 1
    return texts, counts


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", default="5b55bae", help="commit whose lm/curation/pii.py is the 'before'")
    p.add_argument("--planted", type=int, default=3000)
    p.add_argument("--list", action="store_true", help="print every masked line, not only the differences")
    a = p.parse_args(argv)
    from lm.curation import pii as new
    from benchmarks.warc_fixtures import debian_available

    if not debian_available():
        print("Debian documentation packages not installed: bash benchmarks/curation_setup.sh", file=sys.stderr)
        return 2
    old = load_baseline(a.baseline)
    pages = english_pages()
    print(f"{len(pages)} English pages, {sum(len(t) for _, t in pages) / 1e6:.1f} M characters\n")
    print(f"| kind | masks before ({a.baseline}) | masks after |\n|---|---:|---:|")
    diffs = {}
    for kind in ("email", "phone", "ip"):
        before, after = masked_lines(old, pages, kind), masked_lines(new, pages, kind)
        print(f"| {kind} | {sum(x[2] for x in before)} | {sum(x[2] for x in after)} |")
        diffs[kind] = (Counter((u, ln) for u, ln, _ in before), Counter((u, ln) for u, ln, _ in after))
    for kind, (b, af) in diffs.items():
        only_b, only_a = b - af, af - b
        if a.list:
            only_b, only_a = b, af
        for title, lines in ((f"{kind}: masked before only", only_b), (f"{kind}: masked after only", only_a)):
            if lines:
                print(f"\n{title} ({sum(lines.values())} lines)")
                for (u, ln), k in sorted(lines.items()):
                    print(f"  {u[:28]:28s} {ln[:150]!r}" + (f" x{k}" if k > 1 else ""))

    texts, planted = plant(pages, a.planted)
    base = {name: Counter() for name in ("before", "after")}
    found = {name: Counter() for name in ("before", "after")}
    for name, mod in (("before", old), ("after", new)):
        for (_, clean), text in zip(pages, texts):
            base[name].update(mod.mask_pii(clean)[1])
            found[name].update(mod.mask_pii(text)[1])
    print(f"\n| planted ({a.planted}) | planted | recall before | recall after |\n|---|---:|---:|---:|")
    for kind in ("email", "phone", "ip"):
        rec = {n: (found[n][kind] - base[n][kind]) / planted[kind] for n in found}
        print(f"| {kind} | {planted[kind]} | {rec['before']:.3f} | {rec['after']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
