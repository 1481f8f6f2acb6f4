"""hybridnb.models.encoders on tiny random models built here (fast, offline), and on the offline E5 (slow)."""

from __future__ import annotations

import json
from pathlib import Path
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hybridnb.models.encoders import OFFLINE_E5, Encoder, EncoderConfig

WORDS = (
    "hello world query passage the a of in on is was river city paris london berlin capital country "
    "people water mountain book music house school science history today tomorrow small large red blue "
    "green quick brown fox jumps over lazy dog"
).split()

STYLES = {
    # specials, their ids, single/pair templates (pair type ids as the model family uses them)
    "bert": dict(specials=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], pad="[PAD]", unk="[UNK]",
                 single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", marks=("[CLS]", "[SEP]"),
                 input_names=["input_ids", "token_type_ids", "attention_mask"]),
    "xlmr": dict(specials=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], pad="<pad>", unk="<unk>",
                 single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", marks=("<s>", "</s>"),
                 input_names=["input_ids", "attention_mask"]),
    "t5": dict(specials=["<pad>", "</s>", "<unk>"], pad="<pad>", unk="<unk>",
               single="$A </s>", pair="$A </s> $B </s>", marks=("</s>",),
               input_names=["input_ids", "attention_mask"]),
}


def make_tokenizer(style: str):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    st = STYLES[style]
    vocab = {w: i for i, w in enumerate(st["specials"] + WORDS + [":", "?", ".", ","])}
    tk = Tokenizer(models.WordLevel(vocab, unk_token=st["unk"]))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.post_processor = processors.TemplateProcessing(
        single=st["single"], pair=st["pair"], special_tokens=[(m, vocab[m]) for m in st["marks"]])
    kw = dict(pad_token=st["pad"], unk_token=st["unk"])
    if style == "bert":
        kw.update(cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    elif style == "xlmr":
        kw.update(bos_token="<s>", eos_token="</s>", cls_token="<s>", sep_token="</s>", mask_token="<mask>")
    else:
        kw.update(eos_token="</s>")
    return PreTrainedTokenizerFast(tokenizer_object=tk, model_max_length=64, model_input_names=st["input_names"], **kw)


def make_model(style: str, vocab_size: int):
    torch.manual_seed(0)
    if style == "bert":
        from transformers import BertConfig, BertModel

        cfg = BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=64, pad_token_id=0)
        return BertModel(cfg, add_pooling_layer=False)
    if style == "xlmr":
        from transformers import XLMRobertaConfig, XLMRobertaModel

        cfg = XLMRobertaConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                               intermediate_size=64, max_position_embeddings=66, pad_token_id=1,
                               bos_token_id=0, eos_token_id=2)
        return XLMRobertaModel(cfg, add_pooling_layer=False)
    from transformers import T5Config, T5EncoderModel

    cfg = T5Config(vocab_size=vocab_size, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                   relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    return T5EncoderModel(cfg)


@pytest.fixture(scope="module", params=["bert", "xlmr", "t5"])
def model_dir(request, tmp_path_factory):
    """A saved tiny random model + tokenizer folder of each family."""
    style = request.param
    path = tmp_path_factory.mktemp(style)
    tok = make_tokenizer(style)
    make_model(style, len(tok)).save_pretrained(path)
    tok.save_pretrained(path)
    return style, path


def load(model_dir, **kw) -> Encoder:
    return Encoder.from_pretrained(model_dir[1], **kw)


def texts(n: int, seed: int = 0, lo: int = 1, hi: int = 20) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi))) for _ in range(n)]


def hidden_states(enc: Encoder, text: str, pair: str | None = None) -> torch.Tensor:
    """Last hidden states of one unpadded input, straight from the HF model."""
    feats = enc.tokenizer(text, pair, return_tensors="pt")
    feats = {k: v for k, v in feats.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    if "token_type_ids" in feats and not enc._accepts_token_types:
        del feats["token_type_ids"]
    with torch.no_grad():
        return enc.model(**feats).last_hidden_state[0]


# ------------------------------------------------------------------------------------------ config
def test_unknown_pooling_is_rejected_before_loading(monkeypatch):
    with pytest.raises(ValueError, match="pooling"):
        EncoderConfig("x", pooling="max")
    with pytest.raises(ValueError, match="pooling"):  # the path does not exist: nothing was loaded
        Encoder.from_pretrained("/nonexistent/model", pooling="weightedmean")

    def boom():
        raise AssertionError("converted before validating")

    monkeypatch.setattr("hybridnb.models.offline_e5.offline_e5_path", boom)
    with pytest.raises(ValueError, match="pooling"):
        Encoder.from_pretrained(OFFLINE_E5, pooling="max")


def test_unknown_role_and_bad_inputs(model_dir):
    enc = load(model_dir)
    with pytest.raises(ValueError, match="unknown role .document."):
        enc.tokenize(["hello"], "document")
    with pytest.raises(TypeError):
        enc.tokenize("hello world", "query")
    with pytest.raises(TypeError):
        enc.tokenize(["hello", ("a", "b")], "query")


# ----------------------------------------------------------------------------------------- pooling
def test_mean_pooling_ignores_padding(model_dir):
    enc = load(model_dir, normalize=False)
    short, long = "hello world", " ".join(WORDS)
    alone = enc(enc.tokenize([short], "query"))
    batched = enc(enc.tokenize([long, short], "query"))
    assert enc.tokenize([long, short], "query")["attention_mask"][1].sum() < len(long.split())  # padded
    torch.testing.assert_close(batched[1:], alone, atol=1e-5, rtol=1e-4)
    # and equals the plain mean of the unpadded hidden states
    torch.testing.assert_close(alone[0], hidden_states(enc, short).mean(0), atol=1e-5, rtol=1e-4)


def test_cls_pooling_picks_position_0(model_dir):
    enc = load(model_dir, pooling="cls", normalize=False)
    out = enc(enc.tokenize(["the quick brown fox", "hello"], "query"))
    torch.testing.assert_close(out[0], hidden_states(enc, "the quick brown fox")[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out[1], hidden_states(enc, "hello")[0], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_normalisation(model_dir, pooling):
    raw = load(model_dir, pooling=pooling, normalize=False)
    unit = load(model_dir, pooling=pooling, normalize=True)
    batch = texts(5)
    a, b = raw.encode(batch, "passage", show_progress=False), unit.encode(batch, "passage", show_progress=False)
    assert not np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-3)
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(b, a / np.linalg.norm(a, axis=1, keepdims=True), atol=1e-5)


# ----------------------------------------------------------------------------------- tokenisation
def test_prefixes_reach_the_tokenizer(model_dir):
    enc = load(model_dir, query_prefix="query: ", passage_prefix="passage : ")
    tok = enc.tokenizer
    q = enc.tokenize(["hello world"], "query")["input_ids"][0].tolist()
    p = enc.tokenize(["hello world"], "passage")["input_ids"][0].tolist()
    assert q == tok("query: hello world")["input_ids"]
    assert p == tok("passage : hello world")["input_ids"]
    assert tok.convert_tokens_to_ids("query") in q and tok.convert_tokens_to_ids("passage") in p
    # the prefix goes to the first segment of a pair
    pq = enc.tokenize([("hello", "the river")], "query")["input_ids"][0].tolist()
    assert pq == tok("query: hello", "the river")["input_ids"]


def test_pairs_are_encoded_as_pairs_and_truncate_the_context_first(model_dir):
    style, _ = model_dir
    enc = load(model_dir, passage_prefix="passage: ", max_length=12)
    tok = enc.tokenizer
    sentence, context = "the quick brown fox", " ".join(WORDS)
    ids = enc.tokenize([(sentence, context)], "passage")["input_ids"][0].tolist()
    assert len(ids) == 12
    first = tok("passage: " + sentence, add_special_tokens=False)["input_ids"]
    second = tok(context, add_special_tokens=False)["input_ids"]
    n_first = {"bert": 1, "xlmr": 1, "t5": 0}[style]  # specials before the first segment
    assert ids[n_first : n_first + len(first)] == first  # the sentence is whole
    kept = [i for i in ids[n_first + len(first) :] if i not in tok.all_special_ids]
    assert kept == second[: len(kept)] and 0 < len(kept) < len(second)  # the context is cut
    assert ids == tok("passage: " + sentence, context, truncation="only_second", max_length=12)["input_ids"]
    if style == "bert":  # segment ids mark the pair
        tt = enc.tokenize([(sentence, context)], "passage")["token_type_ids"][0].tolist()
        assert tt[0] == 0 and tt[-1] == 1
    # a first segment longer than max_length alone: cut too, without failing the batch
    feats = enc.tokenize([(" ".join(WORDS), "the river"), (sentence, context)], "passage")
    assert feats["input_ids"].shape[1] == 12
    assert feats["input_ids"][1].tolist() == ids  # the other pair keeps only_second truncation


def _pairs_and_rule(tok, seed=5, n=120, max_length=12):
    """Pairs whose sentences straddle the no-room boundary, contexts shared between pairs, and the per-pair rule."""
    rng = random.Random(seed)
    contexts = [" ".join(rng.choices(WORDS, k=rng.randint(1, 9))) for _ in range(n // 4)]
    pairs = [(" ".join(rng.choices(WORDS, k=rng.randint(1, 14))), rng.choice(contexts)) for _ in range(n)]

    def alone(a, b):
        try:
            return tok(a, b, truncation="only_second", max_length=max_length)
        except Exception:  # the first segment alone fills max_length
            return tok(a, b, truncation="longest_first", max_length=max_length)

    expected = [alone("passage: " + a, b) for a, b in pairs]
    lengths = {len(tok("passage: " + a, add_special_tokens=False)["input_ids"]) for a, _ in pairs}
    room = max_length - tok.num_special_tokens_to_add(pair=True)
    assert {room - 1, room, room + 1} <= lengths  # both sides of the boundary are exercised
    return pairs, expected


def test_batched_pair_truncation_matches_the_per_pair_rule(model_dir, monkeypatch):
    """Every pair as if tokenised alone: context cut first, unless the first segment leaves no room for it."""
    monkeypatch.setattr("hybridnb.models.pair_tokens.PAIR_CHUNK", 16)  # several tokenizer calls per group
    enc = load(model_dir, passage_prefix="passage: ", max_length=12)
    pairs, expected = _pairs_and_rule(enc.tokenizer)
    from hybridnb.models import pair_tokens

    by_tokenizer, calls = pair_tokens._by_tokenizer, []

    def spy(tok, first, second, idx, strategy, *args):
        calls.append((strategy, len(idx)))
        return by_tokenizer(tok, first, second, idx, strategy, *args)

    monkeypatch.setattr(pair_tokens, "_by_tokenizer", spy)
    rows = enc.token_rows(pairs, "passage")
    for key in rows:
        assert rows[key] == [list(e[key]) for e in expected], key
    # the tokenizer itself did only the probe of each strategy's pairs: the rest were assembled
    assert sorted(calls) == [("longest_first", 16), ("only_second", 16)]


@pytest.mark.parametrize("style", sorted(STYLES))
def test_kept_lengths_is_the_tokenizers_truncation_rule(style):
    """The lengths the assembled rows keep are the tokenizer's, over a grid on both sides of every boundary."""
    from hybridnb.models.pair_tokens import kept_lengths

    tok = make_tokenizer(style)
    words_a, words_b = WORDS[:16], WORDS[16:32]  # one token each, disjoint: the output tells the segments apart
    ids_a = set(tok(" ".join(words_a), add_special_tokens=False)["input_ids"])
    for max_length in (7, 8, 12):
        room = max_length - tok.num_special_tokens_to_add(pair=True)
        for n_a in range(1, 16):
            for n_b in range(1, 16):
                for strategy in ("only_second", "longest_first"):
                    if strategy == "only_second" and n_a >= room:
                        continue  # the tokenizer refuses: the first segment leaves no room
                    ids = tok(" ".join(words_a[:n_a]), " ".join(words_b[:n_b]), truncation=strategy,
                              max_length=max_length)["input_ids"]
                    body = [i for i in ids if i not in tok.all_special_ids]
                    kept = (sum(i in ids_a for i in body), sum(i not in ids_a for i in body))
                    assert kept_lengths(strategy, n_a, n_b, room) == kept, (strategy, n_a, n_b, max_length)


def test_pair_assembly_falls_back_to_the_tokenizer_when_its_template_is_wrong(model_dir, monkeypatch):
    """A tokenizer whose pair output is not the template read off the probe still gets the per-pair rule."""
    from hybridnb.models import pair_tokens

    enc = load(model_dir, passage_prefix="passage: ", max_length=12)
    good = pair_tokens.pair_template(enc.tokenizer)
    wrong = pair_tokens.PairTemplate(good.pre, good.mid + good.mid, good.post, None)
    monkeypatch.setattr(pair_tokens, "pair_template", lambda tok: wrong)
    pairs, expected = _pairs_and_rule(enc.tokenizer, seed=6)
    assert enc.token_rows(pairs, "passage")["input_ids"] == [e["input_ids"] for e in expected]


def test_pairs_with_an_empty_context_are_tokenised_as_the_tokenizer_does(model_dir):
    enc = load(model_dir, passage_prefix="passage: ", max_length=12)
    pairs = [("the river", ""), ("a city", "the capital of the country"), (" ".join(WORDS[:12]), "")]
    expected = enc.tokenizer([f"passage: {a}" for a, _ in pairs], [b for _, b in pairs], truncation="longest_first",
                             max_length=12)["input_ids"]
    assert enc.token_rows(pairs, "passage")["input_ids"] == [list(e) for e in expected]


def test_single_texts_truncate_to_max_length(model_dir):
    enc = load(model_dir, max_length=8)
    assert enc.tokenize([" ".join(WORDS)], "query")["input_ids"].shape == (1, 8)


def test_a_long_paragraph_tokenised_before_its_cut_gives_no_length_warning(model_dir, capfd, caplog):
    """Paragraphs are tokenised whole once, then cut to max_length: transformers' "Token indices sequence
    length is longer than the specified maximum" is noise there (it filled the executed notebooks)."""
    enc = load(model_dir, max_length=8)
    enc.tokenizer.model_max_length = 16  # the model's positions; the paragraph below is longer
    long = " ".join(WORDS * 3)
    ids = enc.tokenize([(long, long), ("a", long)], "passage")["input_ids"]
    assert ids.shape[1] == 8
    assert "Token indices sequence length" not in capfd.readouterr().err + caplog.text


# ---------------------------------------------------------------------------------------- encode
def test_encode_restores_order_after_length_sorting(model_dir, monkeypatch):
    enc = load(model_dir, query_prefix="query: ")
    batch = texts(23, seed=1, lo=1, hi=30)
    expected = np.stack([enc(enc.tokenize([t], "query"))[0].detach().numpy() for t in batch])
    widths = []
    forward = enc.forward

    def spy(features):
        widths.append(features["input_ids"].shape[1])
        return forward(features)

    monkeypatch.setattr(enc, "forward", spy)
    enc.train()
    out = enc.encode(batch, "query", batch_size=4, show_progress=False)
    assert enc.training  # the mode is restored
    assert out.dtype == np.float32 and out.shape == (23, enc.dim)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert widths == sorted(widths, reverse=True) and len(widths) == 6  # longest batches first


def test_encode_pairs_and_empty(model_dir):
    enc = load(model_dir, passage_prefix="passage: ", max_length=16)
    pairs = list(zip(texts(7, seed=2, hi=5), texts(7, seed=3, lo=5, hi=30)))
    out = enc.encode(pairs, "passage", batch_size=3, show_progress=False)
    ref = np.stack([enc(enc.tokenize([p], "passage"))[0].detach().numpy() for p in pairs])
    np.testing.assert_allclose(out, ref, atol=1e-5)
    assert enc.encode([], "query", show_progress=False).shape == (0, enc.dim)


def test_forward_is_differentiable(model_dir):
    enc = load(model_dir)
    enc.train()
    emb = enc(enc.tokenize(["hello world", "the river"], "query"))
    (emb[0] @ emb[1]).backward()
    grads = [p.grad for p in enc.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)


def test_device_attribute(model_dir):
    enc = load(model_dir)
    assert enc.device.type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_the_tokenizer_is_loaded_once_per_folder_version(model_dir, monkeypatch):
    """A worker process training several runs loads the tokenizer once; a folder saved again is read again."""
    import os

    from transformers import AutoTokenizer

    from hybridnb.models import encoders

    encoders._load_tokenizer.cache_clear()
    loads = []
    real = AutoTokenizer.from_pretrained
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", lambda *a, **k: loads.append(a[0]) or real(*a, **k))
    first, second = load(model_dir), load(model_dir)
    assert first.tokenizer is second.tokenizer and len(loads) == 1
    config = next(f for f in Path(model_dir[1]).iterdir() if f.name.startswith("tokenizer"))
    os.utime(config, ns=(config.stat().st_atime_ns, config.stat().st_mtime_ns + 10**9))  # saved again
    assert load(model_dir).tokenizer is not first.tokenizer and len(loads) == 2
    encoders._load_tokenizer.cache_clear()


# ------------------------------------------------------------------------------ save and reload
@pytest.mark.parametrize("pooling,normalize", [("mean", True), ("cls", False)])
def test_save_loads_in_sentence_transformers(model_dir, tmp_path, pooling, normalize):
    from sentence_transformers import SentenceTransformer

    enc = load(model_dir, pooling=pooling, normalize=normalize, query_prefix="query: ",
               passage_prefix="passage: ", max_length=24)
    out = enc.save(tmp_path / "st")
    assert json.loads((out / "modules.json").read_text())[0]["path"] == "0_Transformer"
    assert json.loads((out / "0_Transformer" / "sentence_bert_config.json").read_text())["max_seq_length"] == 24
    pool = json.loads((out / "1_Pooling" / "config.json").read_text())
    assert pool["pooling_mode_cls_token"] == (pooling == "cls") and pool["pooling_mode_mean_tokens"] == (pooling == "mean")
    assert (out / "2_Normalize").is_dir() == normalize
    tok_class = json.loads((out / "0_Transformer" / "tokenizer_config.json").read_text()).get("tokenizer_class")
    assert tok_class != "TokenizersBackend", "transformers 4.x could not load the tokenizer"
    st_config = json.loads((out / "config_sentence_transformers.json").read_text())
    assert st_config["prompts"] == {"query": "query: ", "passage": "passage: ", "document": "passage: "}
    assert st_config["default_prompt_name"] == "query"
    card = (out / "README.md").read_text()
    assert "encode_document" in card and "'passage: '" in card and str(enc.config.name_or_path) in card

    batch = texts(9, seed=4, hi=40)
    ours = enc.encode(batch, "query", batch_size=4, show_progress=False)
    st = SentenceTransformer(str(out), device="cpu")
    assert getattr(st[0].auto_model, "pooler", None) is None  # no unused, newly initialised pooler, no warning
    passages = enc.encode(batch, "passage", show_progress=False)
    np.testing.assert_allclose(st.encode(batch, prompt_name="query"), ours, atol=1e-5)
    np.testing.assert_allclose(st.encode(batch), ours, atol=1e-5)  # the default prompt: never no prefix
    np.testing.assert_allclose(st.encode(["query: " + t for t in batch], prompt=""), ours, atol=1e-5)
    np.testing.assert_allclose(st.encode(batch, prompt_name="passage"), passages, atol=1e-5)
    np.testing.assert_allclose(st.encode_query(batch), ours, atol=1e-5)  # sentence-transformers >= 5
    np.testing.assert_allclose(st.encode_document(batch), passages, atol=1e-5)

    again = Encoder.from_pretrained(out)
    assert (again.config.pooling, again.config.normalize, again.config.query_prefix, again.config.max_length) == (
        pooling, normalize, "query: ", 24)
    np.testing.assert_allclose(again.encode(batch, "query", show_progress=False), ours, atol=1e-6)


# ------------------------------------------------------------------------------------ offline E5
@pytest.mark.slow
def test_offline_e5_encoder_matches_reference():
    from transformers import AutoModel, AutoTokenizer

    from hybridnb.models.offline_e5 import offline_e5_path

    enc = Encoder.from_pretrained(OFFLINE_E5)
    c = enc.config
    assert (c.pooling, c.query_prefix, c.passage_prefix, c.normalize) == ("mean", "query: ", "passage: ", True)
    path = offline_e5_path()
    tok, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path, add_pooling_layer=False).eval()

    def reference(first, second=None):
        feats = tok(first, second, padding=True, truncation="only_second" if second else True,
                    max_length=256, return_tensors="pt")
        with torch.no_grad():
            h = model(**feats).last_hidden_state
        m = feats["attention_mask"].unsqueeze(-1).float()
        return torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1).numpy()

    queries = ["how much protein should a female eat", "Wer hat die Relativitätstheorie entwickelt?",
               "東京の人口は？", "Столица Франции"]
    pairs = [("Paris is the capital of France.", "Paris is the capital and largest city of France. " * 40),
             ("Berlin ist die Hauptstadt.", "Berlin ist die Hauptstadt Deutschlands.")]
    np.testing.assert_allclose(enc.encode(queries, "query", show_progress=False),
                               reference(["query: " + q for q in queries]), atol=2e-5)
    np.testing.assert_allclose(enc.encode(pairs, "passage", batch_size=1, show_progress=False),
                               np.concatenate([reference(["passage: " + s], [c]) for s, c in pairs]), atol=2e-5)


def test_saved_folder_with_unsupported_modules_is_refused(model_dir, tmp_path):
    out = load(model_dir, pooling="cls").save(tmp_path / "st")
    modules = json.loads((out / "modules.json").read_text())
    modules.append({"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"})
    (out / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ValueError, match="Dense"):
        Encoder.from_pretrained(out)


# ------------------------------------------------------------------- sentence-transformers Dense
def _st_modules():
    try:  # sentence-transformers >= 6
        from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer
    except ImportError:
        from sentence_transformers.models import Dense, Normalize, Pooling, Transformer
    return Transformer, Pooling, Dense, Normalize


@pytest.fixture(scope="module")
def labse_like(tmp_path_factory):
    """A LaBSE-shaped sentence-transformers folder written by sentence-transformers itself:
    tiny BERT -> CLS pooling -> Dense 32->16 tanh -> Normalize."""
    from sentence_transformers import SentenceTransformer

    Transformer, Pooling, Dense, Normalize = _st_modules()
    root = tmp_path_factory.mktemp("labse")
    tok = make_tokenizer("bert")
    make_model("bert", len(tok)).save_pretrained(root / "bert")
    tok.save_pretrained(root / "bert")
    torch.manual_seed(1)
    modules = [Transformer(str(root / "bert"), max_seq_length=32), Pooling(32, pooling_mode="cls"),
               Dense(32, 16, activation_function=torch.nn.Tanh()), Normalize()]
    st = SentenceTransformer(modules=modules, device="cpu")
    st.save(str(root / "st"))
    return root / "st"


def test_dense_layer_matches_sentence_transformers_both_ways(labse_like, tmp_path):
    from sentence_transformers import SentenceTransformer

    enc = Encoder.from_pretrained(labse_like)
    assert (enc.config.pooling, enc.config.normalize, enc.config.max_length) == ("cls", True, 32)
    assert len(enc.dense) == 1 and enc.dim == 16 and enc.hidden_size == 32
    batch = texts(11, seed=5, hi=40)
    ours = enc.encode(batch, "query", batch_size=4, show_progress=False)
    assert ours.shape == (11, 16)
    np.testing.assert_allclose(ours, SentenceTransformer(str(labse_like), device="cpu").encode(batch), atol=1e-5)
    # by hand: CLS state -> Linear -> tanh -> L2 norm
    short = ["hello world", "the quick brown fox", "paris"]
    cls = torch.stack([hidden_states(enc, t)[0] for t in short])
    lin = enc.dense[0].linear
    by_hand = F.normalize(torch.tanh(cls @ lin.weight.T + lin.bias), dim=-1).detach().numpy()
    np.testing.assert_allclose(enc.encode(short, "query", show_progress=False), by_hand, atol=1e-5)

    out = enc.save(tmp_path / "again")
    modules = [m["path"] for m in json.loads((out / "modules.json").read_text())]
    assert modules == ["0_Transformer", "1_Pooling", "2_Dense", "3_Normalize"]
    np.testing.assert_allclose(SentenceTransformer(str(out), device="cpu").encode(batch), ours, atol=1e-5)
    again = Encoder.from_pretrained(out)
    np.testing.assert_allclose(again.encode(batch, "query", show_progress=False), ours, atol=1e-6)


def test_dense_layer_trains_and_loads_from_pytorch_bin(labse_like, tmp_path):
    import shutil

    from safetensors.torch import load_file

    enc = Encoder.from_pretrained(labse_like)
    enc.train()
    emb = enc(enc.tokenize(["hello world", "the river"], "query"))
    (emb[0] @ emb[1]).backward()
    assert enc.dense[0].linear.weight.grad is not None and enc.dense[0].linear.weight.grad.abs().sum() > 0
    assert any(n.startswith("dense.0.linear") for n, _ in enc.named_parameters())

    old = tmp_path / "old"  # an older sentence-transformers layout: Dense weights as pytorch_model.bin
    shutil.copytree(labse_like, old)
    torch.save(load_file(str(old / "2_Dense" / "model.safetensors")), old / "2_Dense" / "pytorch_model.bin")
    (old / "2_Dense" / "model.safetensors").unlink()
    batch = texts(4, seed=6)
    from_bin = Encoder.from_pretrained(old).encode(batch, "passage", show_progress=False)
    from_safetensors = Encoder.from_pretrained(labse_like).encode(batch, "passage", show_progress=False)
    np.testing.assert_allclose(from_bin, from_safetensors, atol=1e-6)


def test_dense_layer_refuses_unknown_activations_and_misplaced_modules(labse_like, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(labse_like, bad)
    cfg = json.loads((bad / "2_Dense" / "config.json").read_text())
    (bad / "2_Dense" / "config.json").write_text(json.dumps({**cfg, "activation_function": "os.system"}))
    with pytest.raises(ValueError, match="activation"):
        Encoder.from_pretrained(bad)
    modules = json.loads((labse_like / "modules.json").read_text())
    modules[1], modules[2] = modules[2], modules[1]  # Dense before Pooling
    (bad / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ValueError, match="Pooling"):
        Encoder.from_pretrained(bad)


# --------------------------------------------------------------------------- encoder-decoder models
@pytest.mark.parametrize("family", ["t5", "mt5"])
def test_encoder_decoder_checkpoint_loads_its_encoder_only(family, tmp_path):
    import transformers

    tok = make_tokenizer("t5")
    cfg_cls, full_cls = {"t5": ("T5Config", "T5ForConditionalGeneration"),
                         "mt5": ("MT5Config", "MT5ForConditionalGeneration")}[family]
    cfg = getattr(transformers, cfg_cls)(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                         relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1,
                                         decoder_start_token_id=0)
    torch.manual_seed(0)
    full = getattr(transformers, full_cls)(cfg).eval()
    full.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    enc = Encoder.from_pretrained(tmp_path, normalize=False)
    assert type(enc.model).__name__ == full_cls.replace("ForConditionalGeneration", "EncoderModel")
    assert not any("decoder" in n for n, _ in enc.model.named_parameters())
    assert enc.dim == 32 and "token_type_ids" not in enc.tokenize(["hello"], "query")
    batch = ["hello world", "the quick brown fox jumps"]
    feats = enc.tokenize(batch, "query")
    with torch.no_grad():
        ref = full.get_encoder()(input_ids=feats["input_ids"], attention_mask=feats["attention_mask"]).last_hidden_state
    m = feats["attention_mask"].unsqueeze(-1).float()
    np.testing.assert_allclose(enc.encode(batch, "query", show_progress=False),
                               ((ref * m).sum(1) / m.sum(1)).numpy(), atol=1e-5)
