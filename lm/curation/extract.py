"""HTML (or plain text) bytes to text: encoding detection, undecodable bytes, binary pages.

Decoding order: bytes that are valid UTF-8 and not plain ASCII are UTF-8 whatever the page
declares (a page served as Latin-1 that decodes as UTF-8 is almost surely UTF-8; the reverse
check is useless because every byte string decodes as Latin-1); then the declared HTTP charset;
then the HTML meta tag and uchardet (resiliparse's `detect_encoding`). Bytes that still do not
decode become U+FFFD, so extraction never fails on bad bytes.
"""

from __future__ import annotations

import codecs
import re

_TEXT_TYPES = ("text/", "application/xhtml", "application/xml", "application/rss", "application/atom")
_HTML_SNIFF = re.compile(rb"<\s*(!doctype\s+html|html|head|body|p|div|title)\b", re.I)
_BLANK_RUNS = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")
# Heading and definition permalinks (Sphinx "headerlink", Jupyter, anchor.js): their "¶" is markup.
_PERMALINKS = ("a.headerlink", "a.anchor-link", "a.anchorjs-link", "a.permalink")
# Other generators' permalinks have no common class; a pilcrow that ends a line is one of them
# (a pilcrow in prose starts a paragraph reference: "¶ 12").
_TRAILING_PILCROW = re.compile(r"[ \t]*¶[ \t]*$", re.M)


def is_binary(data: bytes, content_type: str = "") -> bool:
    """True for payloads that are not text: a non-text Content-Type, NUL bytes, or mostly control bytes."""
    if content_type and not content_type.startswith(_TEXT_TYPES):
        return True
    head = data[:4096]
    if b"\x00" in head:
        # UTF-16 text has NULs too; a BOM says it is text.
        return not head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
    control = sum(1 for b in head if b < 32 and b not in (9, 10, 12, 13, 27))
    return control > 0.1 * max(len(head), 1)


def _valid_codec(name: str) -> str | None:
    try:
        return codecs.lookup(name).name if name else None
    except LookupError:
        return None


def decode_bytes(data: bytes, declared: str = "") -> tuple[str, str]:
    """Decode page bytes; returns (text, encoding used)."""
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding

    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16", errors="replace"), "utf-16"
    if not data.isascii():
        try:
            return data.decode("utf-8-sig"), "utf-8"
        except UnicodeDecodeError:
            pass
    enc = _valid_codec(declared)
    if enc is None or enc == "utf-8":  # UTF-8 was already tried above (or the name is bogus)
        enc = _valid_codec(detect_encoding(data, from_html_meta=True)) or "utf-8"
    return bytes_to_str(data, enc, errors="replace", fallback_encodings=("utf-8", "cp1252")), enc


def looks_like_html(data: bytes, content_type: str = "") -> bool:
    if "html" in content_type or "xml" in content_type:
        return True
    return bool(_HTML_SNIFF.search(data[:2048]))


def html_to_text(html: str, main_content: bool = False) -> str:
    """Visible text of an HTML page, block structure kept as lines, list items with their bullets or
    numbers (resiliparse's defaults), permalink pilcrows dropped."""
    from resiliparse.extract.html2text import extract_plain_text

    text = extract_plain_text(html, preserve_formatting=True, main_content=main_content,
                              list_bullets=True, alt_texts=False, skip_elements=list(_PERMALINKS))
    return _TRAILING_PILCROW.sub("", text)


def clean_whitespace(text: str) -> str:
    """Strip each line's trailing space, at most one blank line in a row, no NULs or stray U+FFFD runs."""
    text = text.replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n")
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return _BLANK_RUNS.sub("\n\n", text).strip()


def extract_text(data: bytes, content_type: str = "", charset: str = "",
                 main_content: bool = False) -> tuple[str, str | None]:
    """Page bytes to text; returns (text, None) or ("", reason) with reason in
    {"empty", "binary", "no_text"}."""
    if not data or not data.strip():
        return "", "empty"
    if is_binary(data, content_type):
        return "", "binary"
    text, _ = decode_bytes(data, charset)
    if looks_like_html(data, content_type):
        try:
            text = html_to_text(text, main_content=main_content)
        except Exception:  # resiliparse rejects some degenerate markup; such a page has no usable text
            return "", "no_text"
    text = clean_whitespace(text)
    return (text, None) if text else ("", "no_text")
