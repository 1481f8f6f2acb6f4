"""Tokenise (sentence, context) pairs exactly as one tokenizer call per pair would, but fast.

The rule, per pair: cut the context first (``only_second``); when the first segment alone leaves no room
for any context, cut the longest segment first (``longest_first``). LAReQA candidates share paragraphs
(XQuAD-R: 13,014 candidates, 2,640 distinct contexts), and tokenising a context is most of the cost, so
pairs are assembled from each distinct context tokenised once: cut to the lengths the tokenizers crate's
rule keeps (:func:`kept_lengths`) and placed in the tokenizer's own pair template (``[CLS] a [SEP] b [SEP]``,
``<s> a </s></s> b </s>``, ``a </s> b </s>``). The template is read off a probe pair, and the assembled rows
are compared with the tokenizer's own output on the first ``PAIR_CHUNK`` pairs of each strategy: on any
difference (a tokenizer whose pair processing is not a plain template) the tokenizer does every pair itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["PAIR_CHUNK", "PairTemplate", "pair_template", "tokenize_pairs"]

PAIR_CHUNK = 64  # pairs per tokenizer call: a call keeps every cut-off piece of a long context (all of XQuAD-R: +3.5 GiB)


@dataclass(frozen=True)
class PairTemplate:
    """Special tokens around and between the two segments, and each part's token type id (None: no types)."""

    pre: list[int]
    mid: list[int]
    post: list[int]
    types: tuple[list[int], int, list[int], int, list[int]] | None

    def row(self, a: list[int], b: list[int]) -> dict[str, list[int]]:
        ids = self.pre + a + self.mid + b + self.post
        out = {"input_ids": ids, "attention_mask": [1] * len(ids)}
        if self.types is not None:
            t_pre, t_a, t_mid, t_b, t_post = self.types
            out["token_type_ids"] = t_pre + [t_a] * len(a) + t_mid + [t_b] * len(b) + t_post
        return out


def pair_template(tok) -> PairTemplate | None:
    """The tokenizer's pair template read off a probe pair; None when its output is not ``pre a mid b post``
    with special tokens only around the segments."""
    a = tok("hello", add_special_tokens=False)["input_ids"]
    b = tok("world", add_special_tokens=False)["input_ids"]
    full = tok("hello", "world")
    ids = list(full["input_ids"])
    special = set(tok.all_special_ids)
    for i in range(len(ids) - len(a) + 1):
        if ids[i : i + len(a)] != a or not all(t in special for t in ids[:i]):
            continue
        for j in range(i + len(a), len(ids) - len(b) + 1):
            if ids[j : j + len(b)] == b and all(t in special for t in ids[i + len(a) : j] + ids[j + len(b) :]):
                types = None
                if "token_type_ids" in full:
                    tt = list(full["token_type_ids"])
                    t_a, t_b = set(tt[i : i + len(a)]), set(tt[j : j + len(b)])
                    if len(t_a) != 1 or len(t_b) != 1:
                        return None
                    types = (tt[:i], t_a.pop(), tt[i + len(a) : j], t_b.pop(), tt[j + len(b) :])
                return PairTemplate(ids[:i], ids[i + len(a) : j], ids[j + len(b) :], types)
    return None


def _by_tokenizer(tok, first, second, idx, strategy, max_length) -> dict[str, list]:
    """The tokenizer's own rows for the pairs ``idx`` ({key: [row per pair in idx]})."""
    rows: dict[str, list] = {}
    for start in range(0, len(idx), PAIR_CHUNK):
        chunk = idx[start : start + PAIR_CHUNK]
        enc = tok([first[i] for i in chunk], [second[i] for i in chunk], truncation=strategy, max_length=max_length)
        for key, values in enc.items():
            rows.setdefault(key, []).extend(list(v) for v in values)
    return rows


def kept_lengths(strategy: str, n_a: int, n_b: int, room: int) -> tuple[int, int]:
    """Tokens each segment keeps when ``room`` is left after the special tokens (the tokenizers crate's rule)."""
    if n_a + n_b <= room:
        return n_a, n_b
    if strategy == "only_second":
        return n_a, max(room - n_a, 0)
    swap = n_a > n_b  # longest_first: n1 is the shorter segment
    n1, n2 = (n_b, n_a) if swap else (n_a, n_b)
    n2 = n1 if n1 > room else max(n1, room - n1)
    if n1 + n2 > room:
        n1 = room // 2
        n2 = n1 + room % 2
    n1, n2 = (n2, n1) if swap else (n1, n2)
    return min(n_a, n1), min(n_b, n2)


def _assembled(tok, template, first_ids, second, idx, strategy, room, context_ids) -> dict[str, list]:
    """Rows for the pairs ``idx``, every distinct context tokenised once (``context_ids`` caches them)."""
    new = list(dict.fromkeys(second[i] for i in idx if second[i] not in context_ids))
    for start in range(0, len(new), PAIR_CHUNK):
        chunk = new[start : start + PAIR_CHUNK]
        # whole paragraphs, cut below: verbose=False drops transformers' "longer than the maximum" warning
        context_ids.update(zip(chunk, tok(chunk, add_special_tokens=False, verbose=False)["input_ids"]))
    rows: dict[str, list] = {}
    for i in idx:
        a, b = first_ids[i], context_ids[second[i]]
        n_a, n_b = kept_lengths(strategy, len(a), len(b), room)
        for key, value in template.row(a[:n_a], b[:n_b]).items():
            rows.setdefault(key, []).append(value)
    return rows


def tokenize_pairs(tok, first: list[str], second: list[str], max_length: int) -> dict[str, list]:
    """{key: one list per pair} with the keys a pair call of ``tok`` returns, in input order."""
    room = max_length - tok.num_special_tokens_to_add(pair=True)
    first_ids = tok(first, add_special_tokens=False, verbose=False)["input_ids"]  # cut below, as the contexts
    too_long = np.array([len(ids) >= room for ids in first_ids], dtype=bool)
    template = pair_template(tok) if len(first) else None
    context_ids: dict[str, list[int]] = {}
    out: dict[str, list] = {}
    empty = np.array([not b for b in second], dtype=bool)  # a tokenizer may read an empty context as no pair
    groups = [("only_second", ~too_long & ~empty, True), ("longest_first", too_long & ~empty, True),
              ("only_second", ~too_long & empty, False), ("longest_first", too_long & empty, False)]
    for strategy, mask, assemble in groups:
        idx = np.flatnonzero(mask)
        if not len(idx):
            continue
        rows = None
        if assemble and template is not None:
            rows = _assembled(tok, template, first_ids, second, idx, strategy, room, context_ids)
            probe = _by_tokenizer(tok, first, second, idx[:PAIR_CHUNK], strategy, max_length)
            if set(probe) != set(rows) or any(probe[k] != rows[k][: len(probe[k])] for k in rows):
                rows = template = None  # not a plain template: the tokenizer does every pair
        if rows is None:
            rows = _by_tokenizer(tok, first, second, idx, strategy, max_length)
        for key, values in rows.items():
            column = out.setdefault(key, [None] * len(first))
            for i, row in zip(idx, values):
                column[i] = row
    return out
