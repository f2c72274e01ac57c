"""An obviously-correct, slow BPE trainer: recount every pair at every merge."""

from collections import Counter

import regex

from lm.tokenizer.pretokenize import GPT2_PATTERN


def reference_train_bpe(text: str, vocab_size: int, special_tokens=()):
    pieces = [text]
    if special_tokens:
        pat = "|".join(regex.escape(s) for s in sorted(special_tokens, key=len, reverse=True))
        pieces = regex.split(pat, text)
    words = Counter()
    for piece in pieces:
        for w in regex.findall(GPT2_PATTERN, piece):
            words[tuple(bytes([b]) for b in w.encode("utf-8"))] += 1
    vocab = {i: bytes([i]) for i in range(256)}
    for s in special_tokens:
        vocab[len(vocab)] = s.encode("utf-8")
    merges = []
    while len(vocab) < vocab_size:
        pairs = Counter()
        for w, c in words.items():
            for p in zip(w, w[1:]):
                pairs[p] += c
        if not pairs:
            break
        best = max(pairs, key=lambda p: (pairs[p], p))
        merges.append(best)
        vocab[len(vocab)] = best[0] + best[1]
        new_words = Counter()
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(best[0] + best[1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new_words[tuple(out)] += c
        words = new_words
    return vocab, merges
