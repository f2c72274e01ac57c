"""PII masking: email addresses, phone numbers and IPv4 addresses become placeholder tokens.

Each function returns (masked text, number of replacements). Phone numbers are the North
American forms (optionally +1, area code with or without parentheses, separators "-", ".", " "
or none) and international numbers written with a leading "+" and 8 to 15 digits. Ambiguity
that no regex can settle: a bare 10-digit number (a Unix timestamp, an order number) is masked
as a phone number, and a four-part version string ("2.6.32.1") as an IP address.
"""

from __future__ import annotations

import re

EMAIL_TOKEN = "|||EMAIL_ADDRESS|||"
PHONE_TOKEN = "|||PHONE_NUMBER|||"
IP_TOKEN = "|||IP_ADDRESS|||"

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}\b")
_NA_PHONE = re.compile(
    r"(?<![\w+.-])(?:\+?1[-.\s]?)?(?:\(\d{3}\)|\d{3})[-.\s]?\d{3}[-.\s]?\d{4}(?![\w-]|\.\d)")
_INTL_PHONE = re.compile(r"(?<![\w+])\+\d{1,3}(?:[-.\s]?\(?\d{1,4}\)?){2,5}(?![\w-]|\.\d)")
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?![\w]|\.\d)")


def mask_emails(text: str) -> tuple[str, int]:
    return _EMAIL.subn(EMAIL_TOKEN, text)


def _intl_ok(m: re.Match) -> str:
    digits = sum(c.isdigit() for c in m.group(0))
    return PHONE_TOKEN if 8 <= digits <= 15 else m.group(0)


def mask_phone_numbers(text: str) -> tuple[str, int]:
    text, n1 = _NA_PHONE.subn(PHONE_TOKEN, text)
    before = text.count(PHONE_TOKEN)
    text = _INTL_PHONE.sub(_intl_ok, text)
    return text, n1 + text.count(PHONE_TOKEN) - before


def mask_ips(text: str) -> tuple[str, int]:
    return _IPV4.subn(IP_TOKEN, text)


def mask_pii(text: str) -> tuple[str, dict[str, int]]:
    """Mask all three kinds; emails first (they may hold digits), then IPs, then phones."""
    text, emails = mask_emails(text)
    text, ips = mask_ips(text)
    text, phones = mask_phone_numbers(text)
    return text, {"email": emails, "ip": ips, "phone": phones}
