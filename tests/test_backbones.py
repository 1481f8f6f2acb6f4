"""hybridnb.models.backbones, hub and baselines: the registry, availability without network, hub backbones loaded
from a Hugging Face cache built here from tiny random models, BM25 on a hand-made task, USE (slow)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from hybridnb.models import backbones, baselines, hub
from hybridnb.models.backbones import availability, availability_table, get_backbone, list_backbones, load_backbone
from hybridnb.models.encoders import OFFLINE_E5, Encoder
from hybridnb.data.lareqa import build_task
from test_encoders import _st_modules, make_model, make_tokenizer, texts

HUB_NAMES = ["xlm-roberta-base", "labse", "mbert", "mt5-base", "e5-small", "e5-base"]


# ------------------------------------------------------------------------------------------ helpers
@pytest.fixture
def offline(monkeypatch, tmp_path):
    """HF_HUB_OFFLINE=1, an empty Hugging Face cache, and every network entry point made to fail loudly."""
    import huggingface_hub
    from huggingface_hub import constants

    def no_network(*args, **kwargs):
        raise AssertionError("a test tried the network")

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub, "model_info", no_network)
    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", no_network)
    monkeypatch.setattr(backbones, "_HUB_UNREACHABLE", [])
    return cache


def install(cache: Path, repo_id: str, src: Path) -> Path:
    """Put ``src`` into ``cache`` the way huggingface_hub stores a downloaded snapshot of ``repo_id``."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(src, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return repo / "snapshots" / commit


def save_tiny(style: str, path: Path, full_t5: bool = False) -> Path:
    tok = make_tokenizer(style)
    if full_t5:  # a whole encoder-decoder checkpoint, as google/mt5-base is
        from transformers import MT5Config, MT5ForConditionalGeneration

        torch.manual_seed(0)
        cfg = MT5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                        relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
        MT5ForConditionalGeneration(cfg).save_pretrained(path)
    else:
        make_model(style, len(tok)).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def st_root_folder(src: Path, path: Path, pooling: str = "mean") -> Path:
    """A sentence-transformers repo with the transformer at its root (as intfloat/multilingual-e5-*)."""
    shutil.copytree(src, path)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
               {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]
    (path / "modules.json").write_text(json.dumps(modules))
    (path / "1_Pooling").mkdir()
    (path / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 32, "pooling_mode_cls_token": pooling == "cls",
         "pooling_mode_mean_tokens": pooling == "mean"}))
    (path / "2_Normalize").mkdir()
    (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 48, "do_lower_case": False}))
    return path


@pytest.fixture(scope="module")
def tiny_repos(tmp_path_factory):
    """Tiny stand-ins for the hub backbones, as folders: {registry name: (hub id to store it under, folder)}."""
    from sentence_transformers import SentenceTransformer

    root = tmp_path_factory.mktemp("repos")
    bert, xlmr = save_tiny("bert", root / "bert"), save_tiny("xlmr", root / "xlmr")
    Transformer, Pooling, Dense, Normalize = _st_modules()
    torch.manual_seed(2)
    SentenceTransformer(modules=[Transformer(str(bert), max_seq_length=32), Pooling(32, pooling_mode="cls"),
                                 Dense(32, 24, activation_function=torch.nn.Tanh()), Normalize()],
                        device="cpu").save(str(root / "labse"))
    return {
        "mbert": ("google-bert/bert-base-multilingual-cased", bert),
        "xlm-roberta-base": ("xlm-roberta-base", xlmr),  # the legacy id (an alias) also counts
        "mt5-base": ("google/mt5-base", save_tiny("t5", root / "mt5", full_t5=True)),
        "e5-small": ("intfloat/multilingual-e5-small", st_root_folder(bert, root / "e5s")),
        "e5-base": ("intfloat/multilingual-e5-base", st_root_folder(xlmr, root / "e5b")),
        "labse": ("sentence-transformers/LaBSE", root / "labse"),
    }


# ----------------------------------------------------------------------------------------- registry
def test_registry_lookup_and_recipes():
    assert set(HUB_NAMES + ["e5-small-offline", "use-multilingual", "bm25"]) == set(list_backbones())
    assert get_backbone("sentence-transformers/LaBSE") is get_backbone("labse")
    assert get_backbone("bert-base-multilingual-cased").name == "mbert"  # a legacy hub id
    assert get_backbone(OFFLINE_E5).name == "e5-small-offline"
    labse = get_backbone("labse")
    assert (labse.pooling, labse.dense, labse.normalize, labse.query_prefix) == ("cls", True, True, "")
    for name in ("e5-small", "e5-base", "e5-small-offline"):
        b = get_backbone(name)
        assert (b.pooling, b.query_prefix, b.passage_prefix) == ("mean", "query: ", "passage: ")
    assert get_backbone("mt5-base").pooling == "mean" and get_backbone("mt5-base").architecture == "mT5 encoder"
    assert not get_backbone("use-multilingual").trainable and not get_backbone("bm25").trainable
    assert get_backbone("bm25").settings == ("mono",) and get_backbone("bm25").family == "lexical"
    assert all(get_backbone(n).needs_network for n in HUB_NAMES)
    assert all(get_backbone(n).licence and get_backbone(n).credit for n in list_backbones())


def test_unknown_backbone_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown backbone 'labse-large'.*xlm-roberta-base.*bm25"):
        get_backbone("labse-large")
    with pytest.raises(ValueError, match="unknown backbone"):
        load_backbone("nope")


# ------------------------------------------------------------------------------------- availability
def test_hub_backbones_not_cached_need_network(offline):
    for name in HUB_NAMES:
        ok, why = availability(name)
        assert not ok and why.startswith("needs network") and get_backbone(name).source in why
    table = availability_table()
    assert list(table.index) == list_backbones()
    assert (table.loc[HUB_NAMES, "status"].str.startswith("not run: needs network")).all()
    assert table.loc[["use-multilingual", "bm25"], "available"].all()
    with pytest.raises(hub.NeedsNetwork, match="google/mt5-base.*HF_HUB_OFFLINE"):
        load_backbone("mt5-base")
    with pytest.raises(hub.NeedsNetwork, match="intfloat/multilingual-e5-base"):
        Encoder.from_pretrained("intfloat/multilingual-e5-base")  # a plain hub id: same resolution
    with pytest.raises(ValueError, match="neither an existing folder nor a Hugging Face hub id"):
        Encoder.from_pretrained("/nonexistent/model")


def test_online_availability_probes_metadata_only(monkeypatch, tmp_path):
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(backbones, "_HUB_UNREACHABLE", [])
    calls = []

    def unreachable(repo_id, timeout=None):
        calls.append(repo_id)
        raise ConnectionError("no route to huggingface.co")

    monkeypatch.setattr(huggingface_hub, "model_info", unreachable)
    ok, why = availability("labse", cache_dir=tmp_path)
    assert not ok and why.startswith("needs network") and "unreachable" in why
    assert not availability("mbert", cache_dir=tmp_path)[0] and calls == ["sentence-transformers/LaBSE"]  # probed once

    monkeypatch.setattr(backbones, "_HUB_UNREACHABLE", [])
    monkeypatch.setattr(huggingface_hub, "model_info", lambda repo_id, timeout=None: object())
    ok, why = availability("labse", cache_dir=tmp_path)
    assert ok and "will be downloaded" in why


def test_offline_backbones_are_available(offline):
    for name in ("e5-small-offline", "use-multilingual", "bm25"):
        ok, why = availability(name)
        assert ok and why.startswith("offline"), (name, why)


# ------------------------------------------------------------------------- hub backbones, from cache
@pytest.mark.parametrize("name", HUB_NAMES)
def test_hub_backbone_loads_from_the_local_cache(offline, tiny_repos, name):
    repo_id, src = tiny_repos[name]
    install(offline, repo_id, src)
    ok, why = availability(name)
    assert ok and "local Hugging Face cache" in why
    spec = get_backbone(name)
    enc = load_backbone(name, max_length=32)
    assert (enc.config.pooling, enc.config.query_prefix, enc.config.passage_prefix, enc.config.max_length) == (
        spec.pooling, spec.query_prefix, spec.passage_prefix, 32)
    assert len(enc.dense) == (1 if spec.dense else 0)
    if name == "mt5-base":
        assert type(enc.model).__name__ == "MT5EncoderModel"
    batch = texts(7, seed=3, hi=25)
    q = enc.encode(batch, "query", batch_size=3, show_progress=False)
    p = enc.encode(list(zip(batch, texts(7, seed=4))), "passage", batch_size=3, show_progress=False)
    assert q.shape == p.shape == (7, 24 if spec.dense else 32) and q.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1, atol=1e-5)
    if spec.pooling == "mean":  # equals a manual masked mean over the padded batch
        feats = enc.tokenize(batch, "query")
        with torch.no_grad():
            hidden = enc.model(**feats).last_hidden_state
        m = feats["attention_mask"].unsqueeze(-1).float()
        manual = torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1), dim=-1).numpy()
        np.testing.assert_allclose(q, manual, atol=1e-5)
        assert (feats["attention_mask"] == 0).any()  # the batch really was padded
    if spec.query_prefix:  # the prefix reaches the tokenizer
        ids = enc.tokenize(["hello"], "query")["input_ids"][0].tolist()
        assert ids == enc.tokenizer("query: hello")["input_ids"]


def test_labse_like_backbone_matches_sentence_transformers(offline, tiny_repos):
    from sentence_transformers import SentenceTransformer

    folder = install(offline, *tiny_repos["labse"])
    enc = load_backbone("labse", max_length=32)
    batch = texts(6, seed=7, hi=20)
    np.testing.assert_allclose(enc.encode(batch, "query", show_progress=False),
                               SentenceTransformer(str(folder), device="cpu").encode(batch), atol=1e-5)


def test_incomplete_cache_is_reported(offline, tiny_repos):
    folder = install(offline, *tiny_repos["mbert"])
    (folder / "model.safetensors").unlink()
    ok, why = availability("mbert")
    assert not ok and why.startswith("needs network") and "lacks model.safetensors" in why
    with pytest.raises(hub.NeedsNetwork, match="incomplete"):
        load_backbone("mbert")


def test_load_backbone_checks_before_loading(offline):
    with pytest.raises(ValueError, match="lexical"):
        load_backbone("bm25")
    with pytest.raises(ValueError, match="max_length 1024 exceeds"):
        load_backbone("labse", max_length=1024)
    with pytest.raises(ValueError, match="pooling"):
        load_backbone("mbert", pooling="max")  # before looking for the model


def test_pick_files_takes_what_an_encoder_needs():
    files = ["config.json", "model.safetensors", "pytorch_model.bin", "tf_model.h5", "tokenizer.json",
             "sentencepiece.bpe.model", "modules.json", "1_Pooling/config.json", "2_Dense/config.json",
             "2_Dense/pytorch_model.bin", "onnx/model.onnx", "onnx/config.json", "openvino/model.bin",
             "flax_model.msgpack", "README.md", ".gitattributes"]
    assert hub.pick_files(files) == ["config.json", "model.safetensors", "tokenizer.json", "sentencepiece.bpe.model",
                                     "modules.json", "1_Pooling/config.json", "2_Dense/config.json",
                                     "2_Dense/pytorch_model.bin"]


# ---------------------------------------------------------------------------------------------- BM25
def test_bm25_tokenize_splits_scripts_without_spaces():
    assert baselines.bm25_tokenize("Hello, WORLD! Straße 1889") == ["hello", "world", "strasse", "1889"]
    zh = baselines.bm25_tokenize("它建于哪一年？")
    assert zh[:6] == ["它", "建", "于", "哪", "一", "年"] and "建于" in zh and "哪一" in zh and len(zh) == 11
    th = baselines.bm25_tokenize("สร้างขึ้น")  # graphemes keep their combining vowels and tone marks
    assert "ขึ้" in th and "ร้" in th and not any(t in ("\u0e36", "\u0e49") for t in th)
    assert baselines.bm25_tokenize("हिन्दी भाषा") == ["हिन्दी", "भाषा"]  # Devanagari marks stay in the word


def test_bm25_scores_follow_the_formula():
    docs, k1, b = ["a b c", "a a d e f", "g"], 1.5, 0.75
    got = baselines.bm25_scores(["a d", "zzz"], docs, k1=k1, b=b)
    lens, avg = [3, 5, 1], 3.0

    def term(tf, df, dl):
        return math.log(1 + (3 - df + 0.5) / (df + 0.5)) * tf / (tf + k1 * (1 - b + b * dl / avg))

    expected = [term(1, 2, lens[0]), term(2, 2, lens[1]) + term(1, 1, lens[1]), 0.0]
    np.testing.assert_allclose(got[0], expected, rtol=1e-5)
    assert not got[1].any()  # nothing in common: all zero


LANG_DATA = {  # per language: paragraphs of (sentences, [(question id, question, answer sentence)])
    "en": [(["The Eiffel Tower stands in Paris.", "It was built in 1889."],
            [("q1", "Where does the Eiffel Tower stand?", 0), ("q2", "When was it built?", 1)]),
           (["Berlin is the capital of Germany.", "The river Spree flows through Berlin."],
            [("q3", "Which river flows through Berlin?", 1)])],
    "th": [(["หอไอเฟลตั้งอยู่ในปารีส", "สร้างขึ้นในปี 1889"],
            [("q1", "หอไอเฟลตั้งอยู่ที่ไหน", 0), ("q2", "สร้างขึ้นในปีใด", 1)]),
           (["เบอร์ลินเป็นเมืองหลวงของเยอรมนี", "แม่น้ำชเปรไหลผ่านเบอร์ลิน"],
            [("q3", "แม่น้ำสายใดไหลผ่านเบอร์ลิน", 1)])],
    "zh": [(["埃菲尔铁塔位于巴黎。", "它建于1889年。"],
            [("q1", "埃菲尔铁塔位于哪里？", 0), ("q2", "它建于哪一年？", 1)]),
           (["柏林是德国的首都。", "施普雷河流经柏林。"], [("q3", "哪条河流经柏林？", 1)])],
}


@pytest.fixture(scope="module")
def tiny_task(tmp_path_factory):
    root = tmp_path_factory.mktemp("lareqa")
    files = {}
    for lang, paragraphs in LANG_DATA.items():
        paras = []
        for sentences, qas in paragraphs:
            sep = "" if lang in ("zh", "th") else " "
            starts = np.cumsum([0] + [len(s) + len(sep) for s in sentences[:-1]]).tolist()
            qa = [{"id": qid, "question": q, "answers": [{"text": sentences[k], "answer_start": starts[k]}]}
                  for qid, q, k in qas]
            paras.append({"context": sep.join(sentences), "sentences": sentences, "qas": qa,
                          "sentence_breaks": [[a, a + len(s)] for a, s in zip(starts, sentences)]})
        files[lang] = root / f"{lang}.json"
        files[lang].write_text(json.dumps({"data": [{"paragraphs": paras}]}, ensure_ascii=False), encoding="utf-8")
    return build_task("tiny", files)


def test_bm25_ranks_the_answer_first_in_every_language(tiny_task):
    result = baselines.bm25_evaluate(tiny_task, show_progress=False)
    assert np.all(result.per_query["mono_r@1"] == 1) and np.all(result.per_query["mono_ap"] == 1)
    for key in ("multi_ap", "multi_r@1", "rank_distance", "cross_ap"):
        assert np.isnan(result.per_query[key]).all()
    summary = result.summary()
    assert summary["mono"]["map"] == 1 and summary["cross"]["map"] is None and summary["multi"]["r@1"] is None
    assert summary["map_matrix"][0] == [1.0, None, None]
    assert "not applicable" in result.meta["not_applicable"]["cross"]


def test_bm25_task_evaluation_block(tiny_task):
    out = backbones.evaluate_backbone("bm25", tiny_task, candidate_mode="sentence", n_resamples=50,
                                      show_progress=False)
    block = out.block
    assert block["mono"]["map"]["value"] == 1 and block["cross"]["map"]["value"] is None
    assert block["multi"]["r@10"]["value"] is None
    assert set(block["not_applicable"]) == {"cross", "multi", "rank_distance"}
    with_context = baselines.bm25_evaluate(tiny_task, candidate_mode="sentence+context", show_progress=False)
    assert np.isfinite(with_context.per_query["mono_ap"]).all()


# ----------------------------------------------------------------------------------------------- USE
def test_use_encoder_contract_checks_before_loading():
    enc = load_backbone("use-multilingual")
    assert isinstance(enc, baselines.USEEncoder) and enc.dim == 512 and not enc.trainable
    assert enc.model._backend is None  # weights load lazily, on the first encode
    with pytest.raises(ValueError, match="unknown role .document."):
        enc.encode(["hello"], "document")
    with pytest.raises(TypeError):
        enc.encode("hello", "query")
    with pytest.raises(ValueError, match="context"):
        baselines.USEEncoder(context="prepend")
    assert enc.model._backend is None


@pytest.mark.slow
def test_use_puts_translations_closer_than_unrelated_sentences():
    enc = load_backbone("use-multilingual")
    en = ["The cat is sleeping on the sofa.", "Stock markets fell sharply today.", "I would like a cup of coffee."]
    de = ["Die Katze schläft auf dem Sofa.", "Die Aktienmärkte sind heute stark gefallen.",
          "Ich hätte gerne eine Tasse Kaffee."]
    zh = ["猫在沙发上睡觉。", "今天股市大幅下跌。", "我想要一杯咖啡。"]
    q = enc.encode(en, "query", show_progress=False)
    assert q.dtype == np.float32 and q.shape == (3, 512)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1, atol=1e-5)
    for other in (de, zh):
        sim = q @ enc.encode(list(zip(other, en[::-1])), "passage", batch_size=2, show_progress=False).T
        assert (np.diag(sim) > sim.max(axis=1, where=~np.eye(3, dtype=bool), initial=-1)).all()
        assert (np.diag(sim) > 0.6).all()
    # a pair embeds its sentence only; "append" adds the context
    pairs = [(de[0], "Das Wetter ist heute schön und sonnig.")]
    np.testing.assert_allclose(enc.encode(pairs, "passage", show_progress=False),
                               enc.encode(de[:1], "passage", show_progress=False), atol=1e-6)
    appended = baselines.USEEncoder(context="append").encode(pairs, "passage", show_progress=False)
    assert not np.allclose(appended, enc.encode(de[:1], "passage", show_progress=False), atol=1e-3)
