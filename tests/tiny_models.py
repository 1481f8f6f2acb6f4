"""Tiny random BERT + word-level tokenizer and a synthetic parallel table, for fast offline trainer tests."""

from __future__ import annotations

import random
from pathlib import Path

import torch

from hybridnb.data.train_data import ParallelTable

WORDS = ("hello world river city paris london berlin capital country people water mountain book music house "
         "school science history today tomorrow small large red blue green quick brown fox jumps over lazy "
         "dog cat tree sun moon star sea road car").split()


def save_tiny_bert(path: Path, dropout: float = 0.1, seed: int = 0) -> Path:
    """A 2-layer, 32-dim BertModel and its tokenizer saved with save_pretrained (Encoder.from_pretrained loads it)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {w: i for i, w in enumerate(specials + WORDS + [":", "?", ".", ","])}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, model_max_length=64, pad_token="[PAD]", unk_token="[UNK]",
                                  cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                  model_input_names=["input_ids", "token_type_ids", "attention_mask"])
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64, pad_token_id=0,
                     hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    path.mkdir(parents=True, exist_ok=True)
    BertModel(cfg, add_pooling_layer=False).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def synthetic_table(n_items: int = 40, languages=("en", "de", "fr"), seed: int = 0, n_neg: int = 2,
                    missing: float = 0.1) -> ParallelTable:
    """Random word sequences per item and language; some (item, language) cells absent."""
    rng = random.Random(seed)
    ids = [f"q{i}" for i in range(n_items)]
    queries, positives, negatives = {}, {}, {}
    for lang in languages:
        queries[lang], positives[lang], negatives[lang] = [], [], []
        for i in range(n_items):
            if lang != languages[0] and rng.random() < missing:
                queries[lang].append(None), positives[lang].append(None), negatives[lang].append([])
                continue
            words = lambda k: " ".join(rng.choice(WORDS) for _ in range(k))  # noqa: E731
            queries[lang].append(words(5) + " ?")
            positives[lang].append((words(6), words(12)))
            negatives[lang].append([(words(6), words(12)) for _ in range(n_neg)])
    return ParallelTable(ids, list(languages), queries, positives, negatives)


def caption_table(n=24, languages=("en", "de", "fr"), size=16, seed=0):
    """An image-text table: item i a random 4 x 4 colour pattern (size x size pixels), its caption in language j
    two vocabulary words."""
    import numpy as np

    from hybridnb.image_text.caption_table import ImageTextTable

    blocks = np.random.default_rng(seed).integers(0, 256, (n, 4, 4, 3), dtype=np.uint8)
    images = blocks.repeat(size // 4, axis=1).repeat(size // 4, axis=2)
    word = lambda k: WORDS[k % len(WORDS)]  # noqa: E731
    captions = {g: [f"{word(i + 3 * j)} {word(7 * i + j)}" for i in range(n)] for j, g in enumerate(languages)}
    return ImageTextTable([f"e{seed}-{i}" for i in range(n)], list(languages), captions, images=images, name="toy")


def constant_result(value: float, languages=("en", "de"), n_groups: int = 20, jitter=None):
    """An EvalResult whose every per-query metric equals ``value`` (plus an optional per-group jitter, one
    value per question group): a system whose macro averages are known by hand. Rank distance is 100x."""
    import numpy as np

    from hybridnb.evaluation.metrics import EvalResult

    L = len(languages)
    q_lang = np.tile(np.arange(L), n_groups)
    q_group = np.repeat(np.arange(n_groups), L)
    base = np.full(n_groups * L, float(value))
    if jitter is not None:
        base = base + np.repeat(jitter, L)
    per_query = {}
    for s in ("mono", "multi"):
        for m in ("ap", "r@1", "r@10"):
            per_query[f"{s}_{m}"] = base.copy()
    for m in ("ap", "r@1", "r@10"):
        cross = np.repeat(base[:, None], L, axis=1)
        cross[np.arange(len(base)), q_lang] = np.nan
        per_query[f"cross_{m}"] = cross
    per_query["rank_distance"] = 100 * base
    return EvalResult(list(languages), per_query, q_lang, q_group)


def save_tiny_st(folder, dropout: float = 0.0):
    """A tiny BERT saved by ``Encoder.save`` in the sentence-transformers layout (mean pooling, E5's prompts)."""
    from pathlib import Path

    import torch

    from hybridnb.models import Encoder

    torch.set_num_threads(1)
    folder = Path(folder)
    base = save_tiny_bert(folder / "bert", dropout=dropout)
    enc = Encoder.from_pretrained(str(base), pooling="mean", max_length=32, query_prefix="query: ",
                                  passage_prefix="passage: ")
    return enc.save(folder / "st")
