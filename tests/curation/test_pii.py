"""PII masking: every planted item found, nothing masked in a clean corpus full of look-alikes."""

import random

from lm.curation.pii import EMAIL_TOKEN, IP_TOKEN, PHONE_TOKEN, mask_emails, mask_ips, mask_phone_numbers, mask_pii


def _email(rng):
    user = rng.choice(["john.doe", "a_b", "x+tag", "Mary-Ann", "dev99", "o'neil".replace("'", "")])
    return f"{user}@{rng.choice(['example.com', 'mail.example.co.uk', 'uni-x.edu', 'sub.domain.org'])}"


def _phone(rng):
    a, b, c = rng.randint(200, 999), rng.randint(200, 999), rng.randint(0, 9999)
    return rng.choice([f"{a}-{b}-{c:04d}", f"({a}) {b}-{c:04d}", f"({a})-{b}-{c:04d}", f"{a}.{b}.{c:04d}",
                       f"{a} {b} {c:04d}", f"{a}{b}{c:04d}", f"+1 {a} {b} {c:04d}", f"+1-{a}-{b}-{c:04d}",
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
