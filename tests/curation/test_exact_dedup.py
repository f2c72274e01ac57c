"""Exact line deduplication: two passes over hashes agree with a brute-force count."""

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from lm.curation.exact_dedup import dedup_lines, exact_line_dedup, line_hash_counts, merge_counts


def brute_force(texts):
    counts = Counter(ln.strip() for t in texts for ln in t.split("\n") if ln.strip())
    out = []
    for t in texts:
        kept = [ln.rstrip() for ln in t.split("\n") if ln.strip() and counts[ln.strip()] == 1]
        out.append(kept)
    return out


lines = st.sampled_from(["menu", "footer (c)", "a real sentence", "another one", "x", "  indented", "", " "])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(lines, max_size=8).map("\n".join), max_size=8), st.integers(0, 8))
def test_matches_brute_force_and_sharding_does_not_matter(texts, cut):
    got = exact_line_dedup(texts)
    assert [[ln for ln in g.split("\n") if ln.strip()] for g in got] == brute_force(texts)
    sharded = merge_counts([line_hash_counts(texts[:cut]), line_hash_counts(texts[cut:])])
    whole = line_hash_counts(texts)
    assert (sharded[0] == whole[0]).all() and (sharded[1] == whole[1]).all()
    assert [dedup_lines(t, sharded)[0] for t in texts] == got


def test_boilerplate_goes_content_stays_blank_runs_collapse():
    pages = [f"Home | About\n\nStory number {i} is here.\n\n\n\nAnother line {i}\nCopyright 2024" for i in range(3)]
    assert exact_line_dedup(pages) == [f"Story number {i} is here.\n\nAnother line {i}" for i in range(3)]
    text, removed = dedup_lines(pages[0], line_hash_counts(pages))
    assert removed == 2


def test_all_duplicate_corpus_and_empty_inputs():
    assert exact_line_dedup(["same page\nsame lines"] * 5) == [""] * 5
    assert exact_line_dedup(["line\nline"]) == [""]  # repeated within one document too
    assert exact_line_dedup([]) == []
    assert exact_line_dedup(["", "\n\n"]) == ["", ""]
    assert merge_counts([])[0].size == 0


def test_final_newline_and_inner_structure_are_kept():
    docs = ["Header\nunique one\nsecond line\n", "Header\nunique two\n\n  indented line\n", "no newline at end"]
    assert exact_line_dedup(docs) == ["unique one\nsecond line\n", "unique two\n\n  indented line\n",
                                      "no newline at end"]
    assert exact_line_dedup(["x\n", "x\n"]) == ["", ""]  # nothing left: no lone newline either
