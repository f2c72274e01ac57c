"""PII masking: email addresses, phone numbers and IPv4 addresses become placeholder tokens.

Each function returns (masked text, number of replacements). Numbers are everywhere in web text
(limits, timestamps, byte counts, versions, section numbers), so a digit string is masked only
when it has the structure of a phone number or an address:

Phone numbers
- North American (NANP): the area code starts with 2-9. Written with parentheses around
  the area code ("(283) 182-3829"), with the same "-" or "." between all three groups
  ("283-182-3829", "834.345.1254"), or after a "+1"/"1" country code with separators. Digits run
  together ("2831823829") or spaced ("283 182 3829") count only after a phone word ("call", "tel",
  "phone", "fax", ...) a few characters before: bare, they are as likely an integer.
- International: "+" and a country code (1-9 first), then digit groups, 8 to 15 digits in all
  (E.164).
IPv4 addresses
- Four octets 0-255, not inside a longer dotted or word token, and not a dotted version or a
  section number: a match is dropped when a version or section word ("version", "release",
  "kernel", a product such as "zlib" or "GCC", "Section") comes just before it, when it starts a line and ends with "."
  ("4.8.3.2. Positional-only"), or when all four parts are at most 20 with no network word
  ("IP", "host", "server", "connect", "DNS", "tcp", ...) within a few words and no port or prefix
  length after it ("Thunderbird 1.5.0.9" is a version; "0.0.0.0:22" and "10.0.0.0/8" are addresses).
  What remains ambiguous is rare in text: "1.2.3.4" after a product name is read as a version.
Precision on the English Debian documentation and recall on planted items: `benchmarks/curation_pii.py`.
"""

from __future__ import annotations

import re

EMAIL_TOKEN = "|||EMAIL_ADDRESS|||"
PHONE_TOKEN = "|||PHONE_NUMBER|||"
IP_TOKEN = "|||IP_ADDRESS|||"

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}\b")

_NOT_BEFORE = r"(?<![\w+.-])"
_NOT_AFTER = r"(?![\w-]|\.\d)"
_AREA, _EXCH = r"[2-9]\d\d", r"\d{3}"
# Structured NANP forms: the punctuation alone says "phone number".
_NA_STRUCTURED = re.compile(
    _NOT_BEFORE + r"(?:"
    rf"(?:\+?1[-.\s]?)?\({_AREA}\)[-.\s]?{_EXCH}[-.\s]\d{{4}}"  # (283) 182-3829
    rf"|{_AREA}(?P<sep>[-.]){_EXCH}(?P=sep)\d{{4}}"  # 283-182-3829, 834.345.1254
    rf"|\+?1(?P<sep1>[-.\s]){_AREA}(?P=sep1){_EXCH}(?P=sep1)\d{{4}}"  # +1 283 182 3829
    r")" + _NOT_AFTER)
# Unstructured NANP forms: a phone only when a phone word precedes them.
_NA_PLAIN = re.compile(_NOT_BEFORE + rf"(?:{_AREA}{_EXCH}\d{{4}}|{_AREA} {_EXCH} \d{{4}})" + _NOT_AFTER)
_PHONE_CUE = re.compile(r"\b(?:call|phone|telephone|tel|fax|mobile|cell|cellphone|dial|text|sms|whatsapp|ph"
                        r"|hotline|contact|reach)\b[\s.:#)(-]*(?:(?:us|me|him|her|them|at|on|no|nr)\b[\s.:#-]*){0,2}$",
                        re.I)
_INTL_PHONE = re.compile(r"(?<![\w+])\+[1-9]\d{0,2}(?:[-.\s]?\(?\d{1,4}\)?){2,5}" + _NOT_AFTER)

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
# Not after "-", "+", "~" ("pkg-1.2.3.4"); not before a letter suffix ("1.2.3.4-beta"); a range
# "192.168.0.234-238" is an address.
_IPV4 = re.compile(rf"(?<![\w.+~-]){_OCTET}(?:\.{_OCTET}){{3}}(?![\w]|\.\d|-[A-Za-z_])")
_VERSION_CUE = re.compile(
    r"\b(?:version|versions|ver|v|release|rel|rev|revision|build|patch|update|upgrade|kernel|linux|python|gcc"
    r"|glibc|libc|zlib|openssl|firmware|java|perl|ruby|php|node|releases|released|section|sections|chapter|sect|§)"
    r"[ \t:=(\xa0]{0,2}$", re.I)
_IP_CUE = re.compile(r"\b(?:ip|ipv4|ips|address|addresses|addr|host|hosts|hostname|server|servers|gateway|dns"
                     r"|nameserver|ping|connect|connects|connected|bind|inet|router|subnet|netmask|route|interface"
                     r"|localhost|listen|listening|proxy|tcp|udp|ipv4address|ipv4network|ip_address|ip_network"
                     r"|network|netstat|nmap|ssh"
                     r"|firewall|iptables|nft)\b", re.I)
_SECTION_START = re.compile(r"[ \t]*(?:[•*·-][ \t]*)?$")


def mask_emails(text: str) -> tuple[str, int]:
    return _EMAIL.subn(EMAIL_TOKEN, text)


def _phone_spans(text: str) -> list[tuple[int, int]]:
    spans = [m.span() for m in _NA_STRUCTURED.finditer(text)]
    for m in _NA_PLAIN.finditer(text):
        if _PHONE_CUE.search(text, max(0, m.start() - 30), m.start()):
            spans.append(m.span())
    for m in _INTL_PHONE.finditer(text):
        if 8 <= sum(c.isdigit() for c in m.group(0)) <= 15:
            spans.append(m.span())
    return spans


def _replace(text: str, spans: list[tuple[int, int]], token: str) -> tuple[str, int]:
    """Replace non-overlapping spans (the earliest, then longest, wins where they overlap)."""
    out, pos, n = [], 0, 0
    for start, end in sorted(spans, key=lambda s: (s[0], -s[1])):
        if start < pos:
            continue
        out += [text[pos:start], token]
        pos, n = end, n + 1
    return "".join(out) + text[pos:], n


def mask_phone_numbers(text: str) -> tuple[str, int]:
    return _replace(text, _phone_spans(text), PHONE_TOKEN)


def _is_ip(text: str, m: re.Match) -> bool:
    start, end = m.span()
    line_before = text[text.rfind("\n", 0, start) + 1:start]
    if text.startswith(".", end) and _SECTION_START.match(line_before):
        return False  # "4.8.3.2. Positional-only parameters": a section number
    if _VERSION_CUE.search(line_before[-40:]):
        return False
    if text.startswith((":", "/"), end) and (text[end + 1:end + 2].isdigit() or text.startswith(":*", end)):
        return True  # a port ("0.0.0.0:22") or a prefix length ("10.0.0.0/8")
    if max(int(p) for p in m.group(0).split(".")) <= 20:
        around = line_before[-25:] + " " + text[end:end + 25].split("\n", 1)[0]
        return bool(_IP_CUE.search(around))
    return True


def mask_ips(text: str) -> tuple[str, int]:
    return _replace(text, [m.span() for m in _IPV4.finditer(text) if _is_ip(text, m)], IP_TOKEN)


def mask_pii(text: str) -> tuple[str, dict[str, int]]:
    """Mask all three kinds; emails first (they may hold digits), then IPs, then phones."""
    text, emails = mask_emails(text)
    text, ips = mask_ips(text)
    text, phones = mask_phone_numbers(text)
    return text, {"email": emails, "ip": ips, "phone": phones}
