"""MinHash signatures over word n-grams, vectorised with NumPy across many documents at once.

Text is normalised (NFD, accents dropped, lower case, punctuation to spaces, whitespace
collapsed) and split into words. Shingles are the word n-grams.

Shingle hashing (`hash="fast"`): every word gets a 64-bit polynomial hash of its code points,
computed for all words of all documents at once from prefix sums (P odd, so P^-1 exists mod 2^64
and a word's hash does not depend on where it sits); n consecutive word hashes are combined and
mixed with the MurmurHash3 64-bit finalizer, giving 64-bit shingle ids (used for exact Jaccard)
and their upper 32 bits (fed to MinHash). `hash="sha1"` instead hashes each shingle's UTF-8 text
with datasketch's `sha1_hash32`, so that signatures equal datasketch's bit for bit (slow; for
checking).

MinHash permutations are datasketch's "affine32" scheme: h -> a*fmix32(h) + b in uint32 with a
odd (a bijection), a and b drawn from `np.random.RandomState(seed)` exactly as datasketch does.
"""

from __future__ import annotations

import hashlib
import re
import struct
import unicodedata
from typing import Sequence

import numpy as np

_P = np.uint64(0x100000001B3)  # odd, so invertible mod 2^64
_P_INV = np.uint64(pow(int(_P), -1, 1 << 64))
_Q = np.uint64(0x9E3779B97F4A7C15)
_NON_WORD = re.compile(r"[\W_]+")
MAX_HASH = np.uint32(0xFFFFFFFF)


_ASCII_NON_WORD = str.maketrans({c: " " for c in map(chr, range(128)) if not c.isalnum()})


def normalize(text: str) -> str:
    """Lower case, no accents (NFD then combining marks dropped), words separated by single spaces."""
    if text.isascii():  # the common case, without the regex engine
        return " ".join(text.lower().translate(_ASCII_NON_WORD).split())
    text = unicodedata.normalize("NFD", text.lower())
    text = "".join(c for c in text if not unicodedata.combining(c))
    return _NON_WORD.sub(" ", text).strip()


def fmix64(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


def fmix32(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def _word_hashes(joined: str) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of the space-separated words of `joined` and each word's start (code point)."""
    codes = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32)
    is_char = codes != 32
    edges = np.diff(np.concatenate(([False], is_char, [False])).astype(np.int8))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    if len(starts) == 0:
        return np.zeros(0, np.uint64), starts
    n = len(codes)
    with np.errstate(over="ignore"):
        powers = np.cumprod(np.full(n, _P, dtype=np.uint64)) * _P_INV  # P^0 .. P^(n-1), wrapping
        inv_powers = np.cumprod(np.full(n, _P_INV, dtype=np.uint64)) * _P
        prefix = np.concatenate(([np.uint64(0)], np.cumsum((codes.astype(np.uint64) + np.uint64(1)) * powers,
                                                            dtype=np.uint64)))
        words = (prefix[ends] - prefix[starts]) * inv_powers[starts]
    return words, starts


def shingle_hashes_batch(texts: Sequence[str], ngram: int = 5, normalized: bool = False
                         ) -> tuple[np.ndarray, np.ndarray]:
    """64-bit shingle hashes of many documents: (hashes [total], offsets [len(texts) + 1]).

    Document d's shingles are hashes[offsets[d]:offsets[d+1]]. A document with fewer than `ngram`
    words has one shingle (all its words); an empty one has none.
    """
    norm = list(texts) if normalized else [normalize(t) for t in texts]
    words_per_doc = np.fromiter((0 if not t else t.count(" ") + 1 for t in norm), dtype=np.int64, count=len(norm))
    word_hash, _ = _word_hashes(" ".join(t for t in norm if t))
    word_off = np.concatenate(([0], np.cumsum(words_per_doc)))
    n_sh = np.where(words_per_doc >= ngram, words_per_doc - ngram + 1, (words_per_doc > 0).astype(np.int64))
    offsets = np.concatenate(([0], np.cumsum(n_sh)))
    if int(offsets[-1]) == 0:
        return np.zeros(0, np.uint64), offsets
    # An n-gram hash at every word position, from shifted slices; then keep the positions whose
    # n-gram stays inside one document.
    n_words = len(word_hash)
    padded = np.concatenate((word_hash, np.zeros(ngram, np.uint64)))
    acc = np.zeros(n_words, np.uint64)
    with np.errstate(over="ignore"):
        for k in range(ngram):
            acc = acc * _Q + padded[k:k + n_words]
        acc = acc + np.uint64(ngram)
    doc_end = np.repeat(word_off[1:], words_per_doc)  # [n_words] end of each word's document
    keep = np.arange(n_words) + ngram <= doc_end
    out = acc[keep]
    short = np.flatnonzero((words_per_doc > 0) & (words_per_doc < ngram))
    if len(short):  # documents shorter than one n-gram: one shingle of all their words
        out = np.insert(out, offsets[short] - np.arange(len(short)), 0)
        with np.errstate(over="ignore"):
            for d, pos in zip(short, offsets[short]):
                h = np.uint64(0)
                for w in word_hash[word_off[d]:word_off[d + 1]]:
                    h = h * _Q + w
                out[pos] = h + np.uint64(words_per_doc[d])
    return fmix64(out), offsets


def sha1_hash32(data: bytes) -> int:
    """datasketch's default 32-bit shingle hash."""
    return struct.unpack("<I", hashlib.sha1(data).digest()[:4])[0]


def shingles(text: str, ngram: int = 5) -> list[str]:
    """The word n-gram strings of a document (as `shingle_hashes_batch` defines them)."""
    words = normalize(text).split()
    if len(words) < ngram:
        return [" ".join(words)] if words else []
    return [" ".join(words[i:i + ngram]) for i in range(len(words) - ngram + 1)]


def permutations(num_perm: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) [num_perm] uint32, drawn exactly as datasketch's affine32 scheme draws them."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint64).astype(np.uint32)
    return a, b


def _signatures_from_hash32(h32: np.ndarray, offsets: np.ndarray, num_perm: int, seed: int,
                            chunk: int) -> np.ndarray:
    a, b = permutations(num_perm, seed)
    n_docs = len(offsets) - 1
    sig = np.full((n_docs, num_perm), MAX_HASH, dtype=np.uint32)
    mixed = fmix32(h32)
    a, b = a[:, None], b[:, None]
    lengths = np.diff(offsets)
    nonempty = np.flatnonzero(lengths > 0)
    # Walk documents in groups of about `chunk` shingles; a long document is cut into pieces.
    # Layout [num_perm, shingles] keeps the per-document min (reduceat) on contiguous rows.
    i = 0
    with np.errstate(over="ignore"):
        while i < len(nonempty):
            lo = int(offsets[nonempty[i]])
            j = max(int(np.searchsorted(offsets[nonempty + 1], lo + chunk, side="right")), i + 1)
            docs = nonempty[i:j]
            hi = int(offsets[docs[-1] + 1])
            if len(docs) == 1:
                for s in range(lo, hi, chunk):
                    phv = a * mixed[None, s:min(s + chunk, hi)] + b
                    sig[docs[0]] = np.minimum(sig[docs[0]], phv.min(axis=1))
            else:
                phv = a * mixed[None, lo:hi] + b
                sig[docs] = np.minimum.reduceat(phv, offsets[docs] - lo, axis=1).T
            i = j
    return sig


def minhash_signatures(texts: Sequence[str], num_perm: int = 128, ngram: int = 5, seed: int = 1,
                       hash: str = "fast", chunk: int = 1 << 15) -> np.ndarray:
    """MinHash signatures [len(texts), num_perm] uint32; an empty document's row is all 0xFFFFFFFF."""
    if hash == "fast":
        h64, offsets = shingle_hashes_batch(texts, ngram)
        h32 = (h64 >> np.uint64(32)).astype(np.uint32)
    elif hash == "sha1":
        per_doc = [[sha1_hash32(s.encode("utf-8")) for s in shingles(t, ngram)] for t in texts]
        offsets = np.concatenate(([0], np.cumsum([len(p) for p in per_doc]))).astype(np.int64)
        h32 = np.fromiter((h for p in per_doc for h in p), dtype=np.uint32, count=int(offsets[-1]))
    else:
        raise ValueError(f"hash must be 'fast' or 'sha1', got {hash!r}")
    return _signatures_from_hash32(h32, offsets, num_perm, seed, chunk)


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard similarity of two shingle-hash sets (unique, sorted arrays)."""
    if len(a) == 0 and len(b) == 0:
        return 1.0
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter)


def shingle_set(text: str, ngram: int = 5) -> np.ndarray:
    """Sorted unique 64-bit shingle hashes of one document (for exact Jaccard)."""
    h, _ = shingle_hashes_batch([text], ngram)
    return np.unique(h)
