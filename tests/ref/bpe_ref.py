#!/usr/bin/python3
"""Reference byte-level BPE for tests/test_bpe.c, written the plain minbpe way
(recount every pair before every merge; merge a chunk's lowest-rank pair
until none is left), so it checks nabla's incremental trainer and heap
encoder. The pre-split rule is nabla's "gpt4-bytes" rule written as a
Python `re` pattern over bytes: the C splitter is hand-written, so the two
check each other.

Differences from minbpe, which nabla shares: ties between equally frequent
pairs go to the lowest (left id, right id) pair, not the first one seen;
training stops early when no pair is left.

Usage: /usr/bin/python3 tests/ref/bpe_ref.py > tests/ref/bpe.txt
"""
import os
import re
import sys

# Byte classes: letters are ASCII letters and every byte >= 0x80 (so UTF-8
# multi-byte characters stay inside words), digits are 0-9, whitespace is
# space \t \n \v \f \r, everything else is "other" (punctuation, controls).
L = rb"A-Za-z\x80-\xff"
N = rb"0-9"
SPLIT = re.compile(
    rb"'(?i:[sdmt]|ll|ve|re)"
    rb"|[^\r\n" + L + N + rb"]?[" + L + rb"]+"
    rb"|[" + N + rb"]{1,3}"
    rb"| ?[^\s" + L + N + rb"]+[\r\n]*"
    rb"|\s*[\r\n]"
    rb"|\s+(?!\S)"
    rb"|\s+"
)


def chunks_of(text):
    chunks = SPLIT.findall(text)
    assert b"".join(chunks) == text  # every byte is in exactly one chunk
    return chunks


def merge(ids, pair, idx):
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(idx)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def train(text, vocab_size):
    chunks = [list(c) for c in chunks_of(text)]
    merges = []
    for r in range(vocab_size - 256):
        stats = {}
        for ch in chunks:
            for p in zip(ch, ch[1:]):
                stats[p] = stats.get(p, 0) + 1
        if not stats:
            break
        pair = max(stats, key=lambda p: (stats[p], -p[0], -p[1]))
        chunks = [merge(ch, pair, 256 + r) for ch in chunks]
        merges.append(pair)
    return merges


def encode(text, merges):
    rank = {p: r for r, p in enumerate(merges)}
    out = []
    for c in chunks_of(text):
        ids = list(c)
        while len(ids) >= 2:
            pair = min(zip(ids, ids[1:]), key=lambda p: rank.get(p, float("inf")))
            if pair not in rank:
                break
            ids = merge(ids, pair, 256 + rank[pair])
        out += ids
    return out


def decode(ids, merges):
    vocab = {i: bytes([i]) for i in range(256)}
    for r, (a, b) in enumerate(merges):
        vocab[256 + r] = vocab[a] + vocab[b]
    return b"".join(vocab[i] for i in ids)


TAIL = (
    b"\n\nI'll say we've they're WE'RE You'D it's 'tis o'er don't\r\n\r\n"
    b"  two  spaces\t\ttabs\x0b\x0c 1234567 3.14 x=1+2; (a,b)!!?\n\n\n   end"
    b"\x00\x01 NUL \xff\xfe\x80 invalid caf\xc3\xa9 na\xc3\xafve \xe2\x80\x94 dash"
    b" \xf0\x9f\x98\x80 emoji aaaaaaaaaa abababab\n   \n  "
)
PROBES = [
    b"Hello, world! It's 2024.\n",
    b"First Citizen:\nBefore we proceed any further, hear me speak.\n",
    b"\x00\xff  \n\n\tzzz qqq ''' 'S",
    b"aaaaaaaaaaaaaaaaaaaaaaa",
]
VOCAB = 420


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    src = os.path.join(here, "../../../shared/data/tinyshakespeare/input.txt")
    with open(src, "rb") as f:
        text = f.read(2500) + TAIL
    merges = train(text, VOCAB)
    w = sys.stdout.write
    w("# tests/ref/bpe_ref.py: minbpe-style reference for tests/test_bpe.c\n")
    w("text %s\n" % text.hex())
    chunks = chunks_of(text)
    w("chunks %d %s\n" % (len(chunks), " ".join(str(len(c)) for c in chunks)))
    w("vocab %d\n" % VOCAB)
    w("merges %d\n" % len(merges))
    for a, b in merges:
        w("%d %d\n" % (a, b))
    for p in [text] + PROBES:
        ids = encode(p, merges)
        assert decode(ids, merges) == p
        w("encode %s\n" % p.hex())
        w("ids %d %s\n" % (len(ids), " ".join(map(str, ids))))


if __name__ == "__main__":
    main()
