"""Reading WARC and WET files (gzip'd or plain) into records with URL, content type and payload.

fastwarc does the parsing. A malformed record makes fastwarc stop with an OSError; we then
resynchronise at the next record start (`WARC/1.` in plain files, a gzip member header in
compressed ones), so one bad record costs that record, not the rest of the file. The number of
records skipped this way is reported through `errors`.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Iterator

_GZIP_MAGIC = b"\x1f\x8b\x08"
_WARC_MAGIC = b"WARC/1."


@dataclasses.dataclass(frozen=True)
class Record:
    """One WARC `response`, `resource` or WET `conversion` record.

    `content_type` is the HTTP Content-Type for responses (the WARC one otherwise), without
    parameters; `charset` is the declared charset or "" when none was declared.
    """

    url: str
    record_type: str
    content_type: str
    charset: str
    payload: bytes
    record_id: str = ""


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(3) == _GZIP_MAGIC


def _next_start(path: Path, after: int, magic: bytes) -> int:
    """Byte offset of the next `magic` at or after `after`, or -1."""
    with open(path, "rb") as f:
        f.seek(after)
        pos, tail = after, b""
        while chunk := f.read(1 << 20):
            buf = tail + chunk
            i = buf.find(magic)
            if i >= 0:
                return pos - len(tail) + i
            tail = buf[-(len(magic) - 1):]
            pos += len(chunk)
    return -1


def _split_content_type(value: str) -> tuple[str, str]:
    parts = [p.strip() for p in (value or "").split(";")]
    ctype, charset = parts[0].lower(), ""
    for p in parts[1:]:
        if p.lower().startswith("charset="):
            charset = p.split("=", 1)[1].strip().strip("\"'")
    return ctype, charset


def read_warc(path: str | os.PathLike, errors: list | None = None) -> Iterator[Record]:
    """Yield the content records of a WARC or WET file, gzip'd or plain (detected from the bytes).

    `errors`, when given, receives one `(byte offset, message)` per malformed stretch skipped.
    """
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"WARC file not found: {str(path)!r}")
    magic = _GZIP_MAGIC if _is_gzip(path) else _WARC_MAGIC
    wanted = WarcRecordType.response | WarcRecordType.resource | WarcRecordType.conversion
    start = 0
    with open(path, "rb") as f:
        while start >= 0:
            f.seek(start)
            last = start
            try:
                it = ArchiveIterator(f, record_types=wanted, parse_http=True)
                for rec in it:
                    last = rec.stream_pos  # absolute: fastwarc counts from the file's start
                    yield _to_record(rec)
                return
            except OSError as e:  # fastwarc's word for a malformed record
                if errors is not None:
                    errors.append((last, str(e)))
                start = _next_start(path, last + 1, magic)


def _to_record(rec) -> Record:
    rtype = (rec.headers.get("WARC-Type", "") or "").lower()
    url = rec.headers.get("WARC-Target-URI", "") or ""
    if rec.is_http and rec.http_headers is not None:
        ctype, charset = _split_content_type(rec.http_headers.get("Content-Type", ""))
    else:
        ctype, charset = _split_content_type(rec.headers.get("Content-Type", ""))
    payload = rec.reader.read()
    return Record(url=url, record_type=rtype, content_type=ctype, charset=charset, payload=payload,
                  record_id=rec.headers.get("WARC-Record-ID", "") or "")
