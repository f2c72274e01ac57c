"""Reading WARC and WET files, gzip'd and plain, including malformed ones."""

import gzip
import re

import pytest

from benchmarks.warc_fixtures import write_warc, write_wet
from lm.curation.reading import read_warc

PAGES = [(f"https://example.org/{i}", f"<html><body><p>page {i} é</p></body></html>".encode(), ctype)
         for i, ctype in enumerate(["text/html; charset=utf-8", "text/html", "text/plain; charset=\"ISO-8859-1\""])]


@pytest.mark.parametrize("suffix", [".warc", ".warc.gz"])
def test_reads_responses_and_conversions(tmp_path, suffix):
    path = write_warc(tmp_path / f"a{suffix}", PAGES)
    recs = list(read_warc(path))
    assert [r.url for r in recs] == [u for u, _, _ in PAGES]
    assert [r.payload for r in recs] == [b for _, b, _ in PAGES]
    assert [(r.content_type, r.charset) for r in recs] == [("text/html", "utf-8"), ("text/html", ""),
                                                            ("text/plain", "ISO-8859-1")]
    assert all(r.record_type == "response" and r.record_id.startswith("<urn:uuid:") for r in recs)
    wet = list(read_warc(write_wet(tmp_path / f"b{suffix}.wet", [("https://example.org/x", "plain words")])))
    assert [(r.url, r.record_type, r.content_type, r.payload) for r in wet] == [
        ("https://example.org/x", "conversion", "text/plain", b"plain words")]


def test_compression_is_detected_from_bytes_not_the_name(tmp_path):
    path = write_warc(tmp_path / "misnamed.warc", PAGES, compress=True)
    assert path.read_bytes()[:2] == b"\x1f\x8b"
    assert len(list(read_warc(path))) == 3


def test_garbage_between_records_costs_nothing_but_is_reported(tmp_path):
    raw = write_warc(tmp_path / "a.warc", PAGES).read_bytes()
    starts = [m.start() for m in re.finditer(rb"WARC/1\.\d\r\n", raw)]
    bad = (raw[:starts[1]] + b"this is not a WARC header\r\n\r\n" + raw[starts[1]:starts[2]] + b"\x00\xff junk"
           + raw[starts[2]:])
    (tmp_path / "bad.warc").write_bytes(bad)
    errors = []
    assert [r.url for r in read_warc(tmp_path / "bad.warc", errors)] == [u for u, _, _ in PAGES]
    assert len(errors) == 2


def test_corrupt_gzip_member_loses_only_that_record(tmp_path):
    raw = write_warc(tmp_path / "a.warc.gz", PAGES).read_bytes()
    members = [m.start() for m in re.finditer(rb"\x1f\x8b\x08", raw)]
    assert len(members) == 3
    m = members[1]
    (tmp_path / "bad.warc.gz").write_bytes(raw[:m + 12] + bytes(40) + raw[m + 52:])
    errors = []
    assert [r.url for r in read_warc(tmp_path / "bad.warc.gz", errors)] == [PAGES[0][0], PAGES[2][0]]
    assert errors


def test_truncated_empty_and_non_warc_files(tmp_path):
    raw = write_warc(tmp_path / "a.warc.gz", PAGES).read_bytes()
    (tmp_path / "trunc.warc.gz").write_bytes(raw[:len(raw) * 2 // 3])
    got = list(read_warc(tmp_path / "trunc.warc.gz", []))
    assert [r.url for r in got][:2] == [PAGES[0][0], PAGES[1][0]]  # complete records survive
    (tmp_path / "empty.warc").write_bytes(b"")
    assert list(read_warc(tmp_path / "empty.warc")) == []
    (tmp_path / "noise.warc").write_bytes(bytes(range(256)) * 20)
    errors = []
    assert list(read_warc(tmp_path / "noise.warc", errors)) == [] and errors
    (tmp_path / "text.warc.gz").write_bytes(gzip.compress(b"hello, not a warc\n" * 10))
    assert list(read_warc(tmp_path / "text.warc.gz", [])) == []
    with pytest.raises(FileNotFoundError, match="not found"):
        list(read_warc(tmp_path / "missing.warc"))
