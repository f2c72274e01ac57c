"""Our Gopher repetition, C4 and FineWeb filters against datatrove's (the reference implementations)
on the English Debian documentation pages: keep/remove agreement, and for C4 whether the kept lines
are the same.

    python benchmarks/curation_filters.py [--write]      (needs the curation-bench extra)
"""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--write", action="store_true")
    a = p.parse_args(argv)
    from datatrove.data import Document
    from datatrove.pipeline.filters import C4QualityFilter, FineWebQualityFilter, GopherRepetitionFilter

    from benchmarks.curation_pii import english_pages
    from benchmarks.results import machine_description, markdown_table, write_section, commit as results_commit
    from lm.curation.c4 import c4_filter
    from lm.curation.fineweb import fineweb_filter
    from lm.curation.repetition import repetition_filter

    pages = english_pages()
    rules = {"Gopher repetition": (GopherRepetitionFilter(), lambda t: repetition_filter(t)[0]),
             "C4": (C4QualityFilter(), lambda t: c4_filter(t)[1] is None),
             "FineWeb": (FineWebQualityFilter(), lambda t: fineweb_filter(t)[0])}
    rows = []
    for name, (ref, ours) in rules.items():
        counts = {"both keep": 0, "both remove": 0, "only ours removes": 0, "only datatrove removes": 0}
        same_text = 0
        for i, (_, text) in enumerate(pages):
            doc = Document(text=text, id=str(i))
            verdict = ref.filter(doc)
            theirs = verdict if isinstance(verdict, bool) else verdict[0]
            mine = ours(text)
            key = ("both keep" if mine else "only ours removes") if theirs else (
                "only datatrove removes" if mine else "both remove")
            counts[key] += 1
            if name == "C4" and mine and theirs:
                same_text += c4_filter(text)[0] == doc.text
        agree = (counts["both keep"] + counts["both remove"]) / len(pages)
        rows.append([name, *counts.values(), f"{agree:.3f}",
                     f"{same_text} of {counts['both keep']}" if name == "C4" else "-"])
    table = markdown_table(["rules", "both keep", "both remove", "only ours removes", "only datatrove removes",
                            "agreement", "same kept lines"], rows)
    print(table)
    if a.write:
        commit = results_commit()
        write_section("curation_filters", f"## Curation: filters against datatrove's (`python benchmarks/"
                      f"curation_filters.py --write`)\nCommit {commit}, {machine_description()}. The {len(pages)} "
                      "English Debian documentation pages (python3.11-doc, debian-handbook en-US, "
                      "debian-reference-en), each filter's keep/remove decision beside datatrove 0.10.1's with "
                      "default settings. Gopher repetition differs by word splitting (datatrove: spaCy tokens, "
                      "punctuation separate; ours: whitespace) and by how repeated n-grams are counted.\n\n"
                      + table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
