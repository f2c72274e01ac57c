"""PII masking: every planted item found, nothing masked in a clean corpus full of look-alikes."""

import random

from lm.curation.pii import EMAIL_TOKEN, IP_TOKEN, PHONE_TOKEN, mask_emails, mask_ips, mask_phone_numbers, mask_pii


def _email(rng):
    user = rng.choice(["john.doe", "a_b", "x+tag", "Mary-Ann", "dev99", "o'neil".replace("'", "")])
    return f"{user}@{rng.choice(['example.com', 'mail.example.co.uk', 'uni-x.edu', 'sub.domain.org'])}"


def _phone(rng):
    a, b, c = rng.randint(200, 999), rng.randint(200, 999), rng.randint(0, 9999)
    return rng.choice([f"{a}-{b}-{c:04d}", f"({a}) {b}-{c:04d}", f"({a})-{b}-{c:04d}", f"{a}.{b}.{c:04d}",
                       # undelimited or space-delimited digits are a phone number only beside a phone word
                       f"call {a} {b} {c:04d}", f"tel. {a}{b}{c:04d}", f"+1 {a} {b} {c:04d}", f"+1-{a}-{b}-{c:04d}",
                       f"+44 20 {rng.randint(1000, 9999)} {rng.randint(1000, 9999)}",
                       f"+49 30 {rng.randint(100000, 999999)}"])


def _ip(rng):
    return ".".join(str(rng.randint(0, 255)) for _ in range(4))


FILLER = ("Please reach the office", "For details contact", "Our server", "as noted in the report",
          "which was updated yesterday", "according to the manual")


def planted_corpus(n_docs=200, seed=0):
    rng = random.Random(seed)
    docs, truth = [], []
    for _ in range(n_docs):
        parts, counts = [], {"email": 0, "phone": 0, "ip": 0}
        for _ in range(rng.randint(1, 6)):
            kind = rng.choice(["email", "phone", "ip"])
            item = {"email": _email, "phone": _phone, "ip": _ip}[kind](rng)
            counts[kind] += 1
            parts.append(f"{rng.choice(FILLER)} {item}{rng.choice(['.', ',', '', ';', ')'])}")
        docs.append(" ".join(parts))
        truth.append(counts)
    return docs, truth


CLEAN = [
    "Python 3.11.2 was released on 2023-02-08 at 12:30:45 UTC; see version 3.11.2-6+deb12u9.",
    "The price is $1,234.56 (or 1.234,56 EUR); 42% of 1,000,000 users agreed in 2021.",
    "ISBN 978-3-16-148410-0 and ISSN 2049-3630 identify the book and the journal.",
    "Run `pip install numpy==1.26.4`, then open chapter 4.2.1, page 123-456.",
    "Coordinates 48.8584, 2.2945; ratio 3:2; the score was 10-7; room 12B.",
    "Use a@b to denote a pattern, or name@localhost, which are not addresses with a domain.",
    "Kernel 6.1.0 and glibc 2.36; the file is 12345678901234 bytes; order #98765.",
    "Call sign N12345, part 1234-5678, a 123-45 code and 12 34 56 78 on the label.",
    "IPv6 ::1 and the mask /24 are not IPv4 addresses; 256.300.1.1 is not one either.",
    "Read RFC 5322 and RFC 791 for the formats; the year range 1990-2024 is fine.",
]


def test_planted_items_all_found():
    docs, truth = planted_corpus()
    for doc, counts in zip(docs, truth):
        masked, got = mask_pii(doc)
        assert got == counts, (doc, masked)
        assert masked.count(EMAIL_TOKEN) == counts["email"]
        assert masked.count(PHONE_TOKEN) == counts["phone"]
        assert masked.count(IP_TOKEN) == counts["ip"]
        assert "@" not in masked.replace(EMAIL_TOKEN, "")


def test_no_false_positives_on_clean_corpus():
    for text in CLEAN:
        masked, counts = mask_pii(text)
        assert counts == {"email": 0, "ip": 0, "phone": 0}, (text, masked)
        assert masked == text


def test_single_kind_functions_and_idempotence():
    assert mask_emails("write to a.b@example.org now") == (f"write to {EMAIL_TOKEN} now", 1)
    assert mask_ips("hosts 10.0.0.1 and 192.168.1.255") == (f"hosts {IP_TOKEN} and {IP_TOKEN}", 2)
    assert mask_phone_numbers("call 2831823829 or (283)-182-3829") == (f"call {PHONE_TOKEN} or {PHONE_TOKEN}", 2)
    text, _ = mask_pii("x@example.com 10.1.2.3 555-867-5309")
    assert mask_pii(text) == (text, {"email": 0, "ip": 0, "phone": 0})


ORDINARY_NUMBERS = [
    "The largest 32-bit value is 2147483647, and 4294967295 is 2**32 - 1.",
    "os.stat gives st_atime=1297230295, st_mtime=1297230027; the disk holds 5368709120 bytes.",
    ">>> ipaddress.ip_address(3221225985) and seed=3652260728 in the example.",
    "/dev/sda6  1392513024 1875384974 482871951 230.3G Linux RAID",
    "Upgrade to Python 3.11.2.1 or zlib 1.2.3.4; the mail client was Thunderbird 1.5.0.9 (GCC 2.7.2.2).",
    "  • 4.8.3.2. Positional-Only Parameters\n8.6.4.1. OR Patterns",
    "Sizes 512 256 1024 and 2048 4096 8192 are powers of two.",
]
REAL_ITEMS = [
    ("Please call 2831823829 today.", "phone"), ("Phone: 283 182 3829.", "phone"),
    ("Ross McFluff: 834.345.1254 155 Elm Street", "phone"), ("Office (283) 182-3829.", "phone"),
    ("London +44 20 7946 0958.", "phone"), ("Reach us at 283-182-3829.", "phone"),
    ("IP: 10.0.0.1 was blocked", "ip"), ("connect to 1.2.3.4 first", "ip"), ("use 8.8.8.8 as DNS", "ip"),
    ("the host 192.168.0.1.", "ip"), ("Bind to 127.0.0.1, port 80.", "ip"),
]


def test_ordinary_numbers_and_versions_are_not_pii():
    """Bare 10-digit integers (limits, timestamps, byte counts) and dotted versions or section numbers
    were masked as phone numbers and IP addresses (issue 21.8)."""
    for text in ORDINARY_NUMBERS:
        masked, counts = mask_pii(text)
        assert counts == {"email": 0, "ip": 0, "phone": 0}, (text, masked)


def test_phone_and_ip_structures_are_still_found():
    for text, kind in REAL_ITEMS:
        _, counts = mask_pii(text)
        assert counts[kind] == 1 and sum(counts.values()) == 1, (text, counts)
