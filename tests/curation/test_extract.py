"""HTML to text: visible text only, encodings (declared, wrong, undeclared), empty and binary pages."""

import codecs

import pytest

from lm.curation.extract import decode_bytes, extract_text, is_binary

from .conftest import FRENCH, GERMAN, html_page


def test_visible_text_only_with_block_lines():
    page = html_page("Title here", "First paragraph.\n\nSecond paragraph.", nav=False).encode()
    text, reason = extract_text(page, "text/html", "utf-8")
    assert reason is None
    assert text.split("\n") == ["Title here", "", "First paragraph.", "", "Second paragraph.", "",
                                "Copyright 2024 Example Corp."]
    assert "var x" not in text and "color" not in text


@pytest.mark.parametrize("text,encoding", [(FRENCH, "windows-1252"), (GERMAN, "iso-8859-1"),
                                           ("Привет, это проверка кодировки страницы " * 5, "koi8-r"),
                                           ("これは日本語のページです。文字コードを確認します。" * 5, "shift_jis")],
                         ids=["fr", "de", "ru", "ja"])
def test_legacy_charset_declared_in_header(text, encoding):
    page = html_page("t", text, nav=False).replace("charset='utf-8'", "")
    got, _ = extract_text(page.encode(encoding), "text/html", encoding)
    assert text.strip()[-12:] in got and "\ufffd" not in got


@pytest.mark.parametrize("encoding", ["windows-1252", "shift_jis", "gb18030"])
def test_undeclared_charset_from_meta_or_detection(encoding):
    text = {"windows-1252": FRENCH, "shift_jis": "これは日本語のページです。" * 20,
            "gb18030": "这是一个中文网页，用于测试字符编码的检测。" * 20}[encoding]
    page = html_page("t", text, nav=False).replace("charset='utf-8'", f"charset='{encoding}'")
    got, _ = extract_text(page.encode(encoding), "text/html", "")
    assert text[:10] in got
    meta_free = html_page("t", text, nav=False).replace("<meta charset='utf-8'>", "")
    got, _ = extract_text(meta_free.encode(encoding), "text/html", "")  # uchardet alone
    assert text[:10] in got


def test_wrong_declared_charset_is_overruled():
    # Served as Latin-1 but really UTF-8: decoding as declared would give mojibake ("Ã©").
    got, _ = extract_text(html_page("t", FRENCH, nav=False).encode("utf-8"), "text/html", "iso-8859-1")
    assert "système" in got and "Ã" not in got
    # Served as UTF-8 but really windows-1252: invalid UTF-8, so the declared charset loses.
    got, _ = extract_text(html_page("t", FRENCH, nav=False).encode("cp1252"), "text/html", "utf-8")
    assert "système" in got
    # A charset name nobody knows.
    got, _ = extract_text(html_page("t", GERMAN, nav=False).encode("utf-8"), "text/html", "x-no-such-charset")
    assert "Verwalter" in got


def test_undecodable_bytes_never_raise():
    data = b"<html><body><p>good words \xff\xfe\x81\x8d then more good words</p></body></html>"
    text, reason = extract_text(data, "text/html", "utf-8")
    assert reason is None and "good words" in text and "more good words" in text
    text, _ = decode_bytes(b"\xe9\xe8 \xc3\x28 mixed", "utf-8")
    assert "mixed" in text


def test_empty_binary_and_textless_pages():
    assert extract_text(b"", "text/html") == ("", "empty")
    assert extract_text(b" \n\t ", "text/html") == ("", "empty")
    assert extract_text(b"\x89PNG\r\n\x1a\n" + bytes(200), "image/png") == ("", "binary")
    assert extract_text(bytes(range(256)) * 4, "") == ("", "binary")
    assert extract_text(b"%PDF-1.4 \x00\x01\x02", "application/pdf") == ("", "binary")
    assert extract_text(b"<html><head><script>x()</script></head><body> </body></html>", "text/html") == ("", "no_text")
    assert is_binary(b"plain", "application/octet-stream")
    assert not is_binary(codecs.BOM_UTF16_LE + "text".encode("utf-16-le"), "text/plain")


def test_plain_text_and_utf16():
    assert extract_text(b"line one\r\nline two\r\n\r\n\r\n\r\nline three", "text/plain") == (
        "line one\nline two\n\nline three", None)
    text, _ = extract_text("Grüße aus Köln".encode("utf-16"), "text/plain")
    assert text == "Grüße aus Köln"


def test_list_bullets_kept_and_heading_links_dropped():
    """resiliparse's own defaults give '  • Novel'; Sphinx's heading permalinks ('¶') are not text."""
    page = ("<html><body><h1>Intro<a class='headerlink' href='#intro' title='Permalink'>¶</a></h1>"
            "<h2>Other<a href='#o'>¶</a></h2><ul><li>Novel</li><li>Poem</li></ul><ol><li>First</li></ol>"
            "<p>Section ¶ 12 of the code stays.</p></body></html>").encode()
    text, _ = extract_text(page, "text/html", "utf-8")
    assert text.split("\n") == ["Intro", "", "Other", "", "  • Novel", "  • Poem", "  1. First", "",
                                "Section ¶ 12 of the code stays."]
