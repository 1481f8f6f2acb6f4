"""Tests for hybridnb.data.train_data: the parallel training table, collate, splits, leak checks and mMARCO.

LAReQA fixture (tests/fixtures/lareqa, see test_lareqa.py) as training data, languages (en, de):

  item a: en s0 of en/0/0 (3 sentences)   de s0 of de/0/0 (2 sentences)
  item b: en s2 of en/0/0                 de s1 of de/0/0
  item c: en s2 of en/0/0                 de s0 of de/0/0
  item d: en s1 of en/1/0 (2 sentences)   (no German question)

mMARCO fixture (tests/fixtures/mmarco, the hub layout under data/), languages en, de, zh:

  triples: 101 1001 1002 | 102 1003 1004 | 101 1001 1005 | 103 1006 1007 | 104 1008 1002 | 102 1003 1009
           | 105 1010 1011
  de lacks query 103 and passage 1005; zh lacks passage 1006 (so 103 is English-only); the German
  queries repeat 101 later (first line wins); the Chinese collection has a line without a tab.
  dev qrels: 201 -> 1001, 1003; 202 -> 1004.
"""

from __future__ import annotations

import os
from pathlib import Path

import datasets
import numpy as np
import pytest

from hybridnb.data import train_data
from hybridnb.data.lareqa import RetrievalTask, build_task
from hybridnb.training.sampling import HybridBatchSampler
from hybridnb.data.train_data import (DataLeakError, ParallelTable, check_no_overlap, collate, from_lareqa, load_mmarco,
                                 normalize_text, remove_overlap, split_validation)

FIXTURES = Path(__file__).parent / "fixtures"
LAREQA = {"en": FIXTURES / "lareqa" / "en.json", "de": FIXTURES / "lareqa" / "de.json"}
MMARCO = FIXTURES / "mmarco"


@pytest.fixture(autouse=True)
def no_hub(monkeypatch):
    """The Hugging Face hub must never be reached from the tests."""
    import huggingface_hub

    def fail(*args, **kwargs):
        raise AssertionError(f"hf_hub_download called in a test: {args} {kwargs}")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fail)


@pytest.fixture(scope="module")
def toy_task():
    return build_task("toy", LAREQA)


@pytest.fixture(scope="module")
def toy(toy_task):
    return from_lareqa(toy_task)


def _sentences(task) -> list[str]:
    return list(task.candidates[:]["sentence"])


def _fake_task(questions: list[tuple[str, str, str, int]], candidates: list[tuple[str, str, str, str]],
               name: str = "fake") -> RetrievalTask:
    """A RetrievalTask from (id, lang, text, answer_cid) and (lang, sentence, context, paragraph) rows."""
    q = {"qid": [f"{g}/{i}" for i, g, _, _ in questions], "id": [r[0] for r in questions],
         "lang": [r[1] for r in questions], "text": [r[2] for r in questions], "answer_cid": [r[3] for r in questions]}
    c = {"cid": list(range(len(candidates))), "lang": [r[0] for r in candidates],
         "sentence": [r[1] for r in candidates], "context": [r[2] for r in candidates],
         "paragraph": [r[3] for r in candidates], "sentence_index": [0] * len(candidates)}
    langs = list(dict.fromkeys(q["lang"]))
    indptr = np.arange(len(questions) + 1, dtype=np.int64)
    return RetrievalTask(name, langs, datasets.Dataset.from_dict(q), datasets.Dataset.from_dict(c),
                         indptr, np.asarray(q["answer_cid"], dtype=np.int64))


def _table(**overrides) -> ParallelTable:
    base = dict(ids=["x", "y"], languages=["en", "de"],
                queries={"en": ["q1", "q2"], "de": ["Q1", None]},
                positives={"en": ["p1", "p2"], "de": ["P1", None]},
                hard_negatives={"en": [["n1"], ["n2", "n3"]], "de": [[], []]})
    base.update(overrides)
    return ParallelTable(**base)


# ------------------------------------------------------------------------------------------------
# from_lareqa on the fixture
# ------------------------------------------------------------------------------------------------


def test_from_lareqa_queries_positives_availability(toy, toy_task):
    s, ctx = _sentences(toy_task), list(toy_task.candidates[:]["context"])
    assert toy.ids == ["a", "b", "c", "d"] and toy.languages == ["en", "de"]
    assert toy.available().tolist() == [[True, True], [True, True], [True, True], [True, False]]
    assert toy.queries["en"][0] == "How many countries does the Rhine flow through?"
    assert toy.queries["de"][3] is None and toy.positives["de"][3] is None and toy.hard_negatives["de"][3] == []
    # positives: the question's own answer sentence with its paragraph (cids: en 0-4, de 5-8)
    assert toy.positives["en"] == [(s[0], ctx[0]), (s[2], ctx[2]), (s[2], ctx[2]), (s[4], ctx[4])]
    assert toy.positives["de"][:3] == [(s[5], ctx[5]), (s[6], ctx[6]), (s[5], ctx[5])]
    assert toy.hard_negative_counts().tolist() == [[1, 1], [1, 1], [1, 1], [1, 0]]


def test_from_lareqa_hard_negatives_same_paragraph_never_positive(toy_task):
    s = _sentences(toy_task)
    paragraph = dict(zip(s, toy_task.candidates[:]["paragraph"]))
    for seed in range(10):
        t = from_lareqa(toy_task, seed=seed)
        for lang in t.languages:
            for pos, negs in zip(t.positives[lang], t.hard_negatives[lang]):
                if pos is None:
                    continue
                (neg_sentence, neg_context), = negs
                assert neg_sentence != pos[0]
                assert paragraph[neg_sentence] == paragraph[pos[0]] and neg_context == pos[1]
    # two-sentence paragraphs leave one choice
    assert [n[0][0] for n in from_lareqa(toy_task).hard_negatives["de"][:3]] == [s[6], s[5], s[6]]
    assert from_lareqa(toy_task).hard_negatives["en"][3][0][0] == s[3]


def test_from_lareqa_deterministic_per_seed(toy_task):
    runs = [from_lareqa(toy_task, seed=k).hard_negatives for k in range(12)]
    assert from_lareqa(toy_task, seed=3).hard_negatives == runs[3]
    assert len({repr(r["en"][0]) for r in runs}) == 2  # item a in en: s1 or s2, both drawn over seeds
    # a negative depends on (seed, item, language) only, not on which other items exist
    sub = build_task("toy", LAREQA, max_ids=1)
    assert from_lareqa(sub, seed=5).hard_negatives["en"][0] == runs[5]["en"][0]


def test_from_lareqa_fallbacks_and_modes(toy_task):
    s = _sentences(toy_task)
    t = from_lareqa(toy_task, candidate_mode="sentence", n_hard_negatives=2)
    assert t.positives["en"][0] == s[0] and isinstance(t.hard_negatives["en"][0][0], str)
    assert sorted(t.hard_negatives["en"][0]) == sorted([s[1], s[2]])
    # item d's paragraph and article hold one other sentence: the second comes from the language
    d = t.hard_negatives["en"][3]
    assert d[0] == s[3] and d[1] in s[:3] and len(set(d)) == 2
    # de/a: s1 of its paragraph, then a German sentence of another article (never its positive)
    a = t.hard_negatives["de"][0]
    assert a[0] == s[6] and a[1] in s[7:9]
    assert all(n == [] for n in from_lareqa(toy_task, n_hard_negatives=0).hard_negatives["en"])


def test_from_lareqa_duplicates_first_question_and_equal_text():
    ctx = "Same. Same. Other."
    task = _fake_task(
        [("a", "en", "first question", 0), ("a", "en", "second question", 2), ("b", "en", "b question", 2)],
        [("en", "Same.", ctx, "en/0/0"), ("en", "Same.", ctx, "en/0/0"), ("en", "Other.", ctx, "en/0/0")],
    )
    for seed in range(5):
        t = from_lareqa(task, candidate_mode="sentence", n_hard_negatives=3, seed=seed)
        assert t.ids == ["a", "b"] and t.queries["en"] == ["first question", "b question"]
        assert t.hard_negatives["en"][0] == ["Other."]  # the duplicate "Same." is never a negative
        assert t.hard_negatives["en"][1] == ["Same."]


def test_from_lareqa_bad_input(toy_task):
    with pytest.raises(ValueError, match="candidate_mode"):
        from_lareqa(toy_task, candidate_mode="context")
    with pytest.raises(ValueError, match="n_hard_negatives"):
        from_lareqa(toy_task, n_hard_negatives=-1)
    with pytest.raises(ValueError, match="seed"):
        from_lareqa(toy_task, seed=-2)


# ------------------------------------------------------------------------------------------------
# ParallelTable, collate, split_validation
# ------------------------------------------------------------------------------------------------


def test_table_validation():
    with pytest.raises(ValueError, match="empty"):
        _table(ids=[], queries={"en": [], "de": []}, positives={"en": [], "de": []},
               hard_negatives={"en": [], "de": []})
    with pytest.raises(ValueError, match="not unique"):
        _table(ids=["x", "x"])
    with pytest.raises(ValueError, match="one entry per item"):
        _table(queries={"en": ["q1"], "de": ["Q1", None]})
    with pytest.raises(ValueError, match="expected"):
        _table(positives={"en": ["p1", "p2"]})
    with pytest.raises(ValueError, match=r"\['de'\] have no items"):
        _table(queries={"en": ["q1", "q2"], "de": [None, None]})
    with pytest.raises(ValueError, match="unique"):
        _table(languages=["en", "en"])


def test_table_subset_select_texts_save(tmp_path, toy):
    t = _table()
    assert t.subset([1, 0]).ids == ["y", "x"] and t.subset(np.array([True, False])).ids == ["x"]
    with pytest.raises(ValueError, match="indices"):
        t.subset([2])
    with pytest.raises(ValueError, match="no items"):
        t.subset([1])  # y has no German
    with pytest.raises(ValueError, match="empty"):
        t.subset([])
    assert toy.select_languages(["de"]).ids == ["a", "b", "c"]  # d has no German
    with pytest.raises(ValueError, match="unknown language"):
        toy.select_languages(["fr"])
    assert t.texts() == {"q1", "q2", "Q1", "p1", "p2", "P1", "n1", "n2", "n3"}
    pair = toy.positives["en"][0]
    assert pair[0] in toy.texts() and pair[1] not in toy.texts() and pair[1] in toy.texts(contexts=True)
    toy.save(tmp_path / "t.json")
    back = ParallelTable.load(tmp_path / "t.json")
    assert back == toy and isinstance(back.hard_negatives["en"][0][0], tuple)
    (tmp_path / "bad.json").write_text("[1]")
    with pytest.raises(ValueError, match="not a ParallelTable"):
        ParallelTable.load(tmp_path / "bad.json")


def test_collate_languages_per_pair(toy):
    pairs = np.array([[0, 0, 1], [1, 1, 0], [3, 0, 0]])  # a en->de, b de->en, d en->en
    queries, positives, negatives = collate(toy, pairs)
    assert queries == [toy.queries["en"][0], toy.queries["de"][1], toy.queries["en"][3]]
    assert positives == [toy.positives["de"][0], toy.positives["en"][1], toy.positives["en"][3]]
    assert negatives == [toy.hard_negatives["de"][0][0], toy.hard_negatives["en"][1][0], toy.hard_negatives["en"][3][0]]
    assert collate(toy, pairs, n_hard_negatives=0)[2] == []
    assert collate(toy, np.zeros((0, 3), dtype=np.int64)) == ([], [], [])


def test_collate_bad_input(toy):
    with pytest.raises(ValueError, match="no query in 'de'"):
        collate(toy, np.array([[3, 1, 0]]))
    with pytest.raises(ValueError, match="no positive in 'de'"):
        collate(toy, np.array([[3, 0, 1]]))
    with pytest.raises(ValueError, match="1 hard negative"):
        collate(toy, np.array([[0, 0, 0]]), n_hard_negatives=2)
    with pytest.raises(ValueError, match="shape"):
        collate(toy, np.array([0, 0, 0]))
    with pytest.raises(ValueError, match="shape"):
        collate(toy, np.array([[0.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="out of range"):
        collate(toy, np.array([[4, 0, 0]]))
    with pytest.raises(ValueError, match="out of range"):
        collate(toy, np.array([[0, 2, 0]]))


def test_collate_with_sampler(toy):
    sampler = HybridBatchSampler(toy.available(), toy.languages, 3, strategy="cross", seed=1, item_ids=toy.ids)
    for batch in sampler.take(5):
        queries, positives, negatives = collate(toy, batch.pairs)
        assert len(queries) == len(positives) == len(negatives) == 3
        for (item, ql, pl), q, p in zip(batch.pairs.tolist(), queries, positives):
            assert ql != pl
            assert q == toy.queries[toy.languages[ql]][item] and p == toy.positives[toy.languages[pl]][item]



def test_false_negatives_counts_shared_answer_text(toy):
    # items b and c answer with the same English sentence (en s2 of en/0/0): in one English batch each query
    # meets its own answer's text as the other's positive, 2 false negatives; German answers differ
    b, c = toy.ids.index("b"), toy.ids.index("c")
    assert toy.positives["en"][b] == toy.positives["en"][c]
    _, positives, negatives = collate(toy, np.array([[b, 0, 0], [c, 0, 0]]), n_hard_negatives=0)
    assert train_data.false_negatives(positives, negatives) == 2
    _, positives, negatives = collate(toy, np.array([[b, 1, 1], [c, 1, 1]]), n_hard_negatives=0)
    assert train_data.false_negatives(positives, negatives) == 0
    # a hard negative equal to another pair's positive is a false negative for that pair's query only
    assert train_data.false_negatives(["p1", "p2"], ["p2", "x"]) == 1
    assert train_data.false_negatives(["p1", "p2"], ["x", "y"]) == 0
    assert train_data.false_negatives([("s", "ctx"), ("s", "ctx2")], []) == 0  # (sentence, context) pairs compare whole


def test_false_negative_mask_layout_and_ids():
    ids = train_data.text_ids(["a", "b", ("s", "ctx"), ("s", "ctx")])
    assert ids.dtype == np.int64 and ids[0] != ids[1] and ids[2] == ids[3]
    assert (train_data.text_ids(["a"]) == ids[:1]).all()  # the same text, the same id (no per-call salt)
    mask = train_data.false_negative_mask(train_data.text_ids(["p1", "p2", "p1"]), train_data.text_ids(["x", "p2", "y"]))
    # candidates: p1 p2 p1 | x p2 y ; own positives (the diagonal) never masked
    assert mask.tolist() == [[False, False, True, False, False, False],
                             [False, False, False, False, True, False],
                             [True, False, False, False, False, False]]

def test_split_validation(toy_task):
    table = from_lareqa(_fake_task([(f"id{i}", "en", f"question {i}", i) for i in range(40)],
                                   [("en", f"sentence {i}", "ctx", f"en/{i}/0") for i in range(40)]))
    train, val = split_validation(table, fraction=0.25, seed=3)
    assert len(val) == 10 and len(train) == 30 and not set(train.ids) & set(val.ids)
    assert sorted(train.ids + val.ids) == sorted(table.ids)
    assert train.ids == [i for i in table.ids if i in set(train.ids)]  # table order kept
    again = split_validation(table, fraction=0.25, seed=3)
    assert again[0] == train and again[1] == val
    assert split_validation(table, fraction=0.25, seed=4)[1].ids != val.ids
    assert len(split_validation(table, fraction=0.001)[1]) == 1
    for bad in (0, 1, -0.1, 1.5, True, "0.1", float("nan")):
        with pytest.raises(ValueError, match="fraction"):
            split_validation(table, fraction=bad)
    with pytest.raises(ValueError, match="no training item"):
        split_validation(table.subset([0]), fraction=0.5)


# ------------------------------------------------------------------------------------------------
# Overlap with an evaluation task
# ------------------------------------------------------------------------------------------------


def test_normalize_text():
    assert normalize_text("  Ｈｅｌｌｏ\u00a0\tWORLD\n ") == "hello world"
    assert normalize_text("Straße") == normalize_text("STRASSE")


def test_overlap_detected_after_normalisation_and_removed(toy, toy_task):
    s, ctx = _sentences(toy_task), list(toy_task.candidates[:]["context"])
    clean = _fake_task([("z", "fr", "Une question sans rapport ?", 0)],
                       [("fr", "Une phrase.", "Un autre paragraphe.", "fr/0/0")])
    check_no_overlap(toy, clean)
    assert remove_overlap(toy, clean) == (toy, 0)
    # an evaluation question equal to item b's German query up to width, case and spacing
    leak = _fake_task([("z", "de", "  " + toy.queries["de"][1].upper().replace(" ", "\u3000 "), 0)],
                      [("de", "Ganz neu.", "Ganz neu.", "de/0/0")])
    with pytest.raises(DataLeakError, match=r"1 questions, 0 sentences, 0 contexts") as err:
        check_no_overlap(toy, leak)
    assert isinstance(err.value, ValueError) and "remove_overlap" in str(err.value)
    kept, dropped = remove_overlap(toy, leak)
    assert dropped == 1 and kept.ids == ["a", "c", "d"]
    check_no_overlap(kept, leak)
    # a shared paragraph counts in sentence+context mode only
    ctx_leak = _fake_task([("z", "en", "Unrelated?", 0)], [("en", "Unrelated.", ctx[3], "en/0/0")])
    check_no_overlap(toy, ctx_leak, candidate_mode="sentence")
    with pytest.raises(DataLeakError, match="1 contexts"):
        check_no_overlap(toy, ctx_leak)
    assert remove_overlap(toy, ctx_leak)[1] == 1  # item d (its paragraph en/1/0)
    # a candidate sentence of the evaluation pool equal to a training hard negative
    neg = toy.hard_negatives["de"][0][0][0]
    with pytest.raises(DataLeakError, match="1 sentences"):
        check_no_overlap(toy, _fake_task([("z", "en", "?", 0)], [("en", neg, "x", "en/0/0")]), "sentence")
    with pytest.raises(ValueError, match="candidate_mode"):
        check_no_overlap(toy, clean, candidate_mode="context")
    # the whole fixture against itself: everything leaks
    with pytest.raises(ValueError, match="empty"):
        remove_overlap(toy, toy_task)
    assert s  # fixture sanity


# ------------------------------------------------------------------------------------------------
# mMARCO (local fixture; the hub is patched to fail)
# ------------------------------------------------------------------------------------------------


def test_mmarco_fixture_train():
    t = load_mmarco(["en", "de", "zh"], root=MMARCO)
    assert t.ids == ["101", "102", "103", "104", "105"] and t.languages == ["en", "de", "zh"]
    assert t.available().tolist() == [[True] * 3, [True] * 3, [True, False, False], [True] * 3, [True] * 3]
    assert t.queries["de"][0] == "was ist die hauptstadt von frankreich"  # the first of two lines for 101
    assert t.positives["zh"][0] == "巴黎是法国的首都。"
    assert t.positives["en"][1] == "Mount Everest is 8,849 metres tall."
    assert t.hard_negatives["en"] == [["Lyon is a city in France."], ["K2 is the second-highest mountain."],
                                      ["Macbeth is a tragedy."], ["Lyon is a city in France."], ["Pandas eat bamboo."]]
    assert t.queries["de"][2] is None and t.positives["zh"][2] is None and t.positives["de"][2] is not None


def test_mmarco_fixture_negatives_and_max_items():
    t = load_mmarco(["en", "de"], root=MMARCO, n_hard_negatives=2)
    assert t.hard_negatives["en"][0] == ["Lyon is a city in France.", "France borders Spain."]
    assert t.hard_negatives["de"][0] == ["Lyon ist eine Stadt in Frankreich."]  # 1005 lacks a German text
    assert t.hard_negatives["en"][1] == ["K2 is the second-highest mountain.", "The Alps are in Europe."]
    assert t.hard_negatives["en"][4] == ["Pandas eat bamboo."]  # 105 has a single triple
    first = load_mmarco(["en", "de"], root=MMARCO, max_items=2)
    assert first.ids == ["101", "102"] and first.hard_negative_counts().tolist() == [[1, 1], [1, 1]]
    # asking for 2 negatives keeps reading until both items have them (line 6 for 102)
    two = load_mmarco(["en", "de"], root=MMARCO, max_items=2, n_hard_negatives=2)
    assert two.ids == ["101", "102"] and two.hard_negative_counts()[:, 0].tolist() == [2, 2]


def test_mmarco_fixture_sample():
    runs = {seed: load_mmarco(["en", "zh"], root=MMARCO, max_items=2, sample=True, seed=seed) for seed in range(8)}
    for seed, t in runs.items():
        assert len(t) == 2 and set(t.ids) <= {"101", "102", "103", "104", "105"}
        assert t.ids == sorted(t.ids)  # order of first appearance in the triples file
        assert load_mmarco(["en", "zh"], root=MMARCO, max_items=2, sample=True, seed=seed).ids == t.ids
    assert len({tuple(t.ids) for t in runs.values()}) > 1
    full = load_mmarco(["en"], root=MMARCO, n_hard_negatives=2)
    for t in runs.values():  # a sampled item gets the negatives of all its triples
        for i, qid in enumerate(t.ids):
            assert t.hard_negatives["en"][i] == full.hard_negatives["en"][full.ids.index(qid)][:1]


def test_mmarco_fixture_dev():
    t = load_mmarco(["de", "en"], root=MMARCO, split="dev", n_hard_negatives=3)
    assert t.ids == ["201", "202"] and t.languages == ["de", "en"]
    assert t.positives["en"] == ["Paris is the capital and largest city of France.",
                                 "K2 is the second-highest mountain."]
    assert t.queries["de"][1] == "wie lang ist der nil"
    assert t.hard_negative_counts().sum() == 0


def test_mmarco_text_file_details(tmp_path):
    """Only "\\n" ends a line (a stray "\\r" stays in the text); malformed id lines are errors."""
    root = tmp_path / "mm"
    for rel in ("data/triples.train.ids.small.tsv", "data/google/queries/train/english_queries.train.tsv"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes((MMARCO / rel).read_bytes())
    col = root / "data/google/collections/english_collection.tsv"
    col.parent.mkdir(parents=True)
    col.write_bytes("1001\tline one\rstill one\n1010\tcrlf line\r\n".encode())
    t = load_mmarco(["en"], root=root)
    assert t.positives["en"][0] == "line one\rstill one" and t.positives["en"][4] == "crlf line"
    assert t.positives["en"][1] is None
    (root / "data/triples.train.ids.small.tsv").write_text("101\t1001\n")
    with pytest.raises(ValueError, match=r"triples.train.ids.small.tsv:1: expected 3"):
        load_mmarco(["en"], root=root)


def test_mmarco_hub_filenames(monkeypatch):
    """Without root the files come from hf_hub_download (patched here to serve the fixture)."""
    import huggingface_hub

    calls = []

    def fake(repo_id, repo_type, filename):
        calls.append((repo_id, repo_type, filename))
        return str(MMARCO / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)
    t = load_mmarco(["zh", "en"], max_items=1)
    assert t.ids == ["101"] and t.positives["zh"] == ["巴黎是法国的首都。"]
    assert calls == [("unicamp-dl/mmarco", "dataset", f) for f in (
        "data/triples.train.ids.small.tsv",
        "data/google/queries/train/chinese_queries.train.tsv", "data/google/collections/chinese_collection.tsv",
        "data/google/queries/train/english_queries.train.tsv", "data/google/collections/english_collection.tsv")]


def test_mmarco_bad_input(tmp_path):
    for bad in (["xx"], ["english"], ["en", "en"], []):
        with pytest.raises(ValueError, match="language"):
            load_mmarco(bad, root=MMARCO)
    with pytest.raises(TypeError):
        load_mmarco("en", root=MMARCO)
    with pytest.raises(ValueError, match="split"):
        load_mmarco(["en"], root=MMARCO, split="test")
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="max_items"):
            load_mmarco(["en"], root=MMARCO, max_items=bad)
    with pytest.raises(FileNotFoundError, match="lacks 3 file"):
        load_mmarco(["en"], root=tmp_path)
    with pytest.raises(ValueError, match=r"\['de'\] have no items"):  # 201/202 only, German file emptied
        root = tmp_path / "mm"
        for f in MMARCO.rglob("*.tsv"):
            dest = root / f.relative_to(MMARCO)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(b"" if f.name == "german_queries.dev.tsv" else f.read_bytes())
        load_mmarco(["en", "de"], root=root, split="dev")
    assert sorted(train_data.MMARCO_LANGUAGES) == sorted(
        ["ar", "de", "en", "es", "fr", "hi", "id", "it", "ja", "nl", "pt", "ru", "vi", "zh"])


# ------------------------------------------------------------------------------------------------
# Real data (raw-data mirror): MLQA-R and XQuAD-R against each other
# ------------------------------------------------------------------------------------------------


def _real_mirror() -> Path | None:
    for candidate in (os.environ.get("HYBRIDNB_MIRROR"), "/work/shared/data"):
        if candidate and (Path(candidate) / "MANIFEST.md").is_file():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def real_tasks(tmp_path_factory):
    mirror = _real_mirror()
    if mirror is None:
        pytest.skip("no raw-data mirror (HYBRIDNB_MIRROR)")
    from hybridnb.data.lareqa import load_task

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HYBRIDNB_MIRROR", str(mirror))
        mp.setenv("HYBRIDNB_CACHE", str(tmp_path_factory.mktemp("train_data_cache")))
        return {name: load_task(name) for name in ("mlqa-r", "xquad-r")}


@pytest.mark.slow
def test_real_from_lareqa_mlqa(real_tasks):
    task = real_tasks["mlqa-r"]
    t = from_lareqa(task)
    q = task.questions[:]
    assert len(t) == 1148 and t.languages == ["ar", "de", "en", "es", "hi", "vi", "zh"]
    present = {(i, g) for i, g in zip(q["id"], q["lang"])}
    assert t.available().tolist() == [[(i, g) in present for g in t.languages] for i in t.ids]
    assert t.available().sum() == 4199
    assert t.hard_negative_counts()[t.available()].min() == 1  # fallbacks fill short paragraphs
    c = task.candidates[:]
    para_of = {}
    for sentence, para in zip(c["sentence"], c["paragraph"]):
        para_of.setdefault(sentence, set()).add(para)
    same_paragraph = 0
    for g in t.languages:
        for pos, negs in zip(t.positives[g], t.hard_negatives[g]):
            if pos is not None:
                assert negs[0][0] != pos[0]
                same_paragraph += bool(para_of[negs[0][0]] & para_of[pos[0]])
    assert same_paragraph >= 4199 - 275  # all but the questions of single-sentence paragraphs


@pytest.mark.slow
@pytest.mark.parametrize("train_name, eval_name", [("mlqa-r", "xquad-r"), ("xquad-r", "mlqa-r")])
def test_real_overlap_between_tasks(real_tasks, train_name, eval_name, capsys):
    train_task, eval_task = real_tasks[train_name], real_tasks[eval_name]
    # The two pools share exactly two (Hindi) sentences, no question and no paragraph:
    # "[उद्धरण वांछित]" ("[citation needed]") and "ए." (an initial).
    def norm(ds, col):
        return {normalize_text(x) for x in set(ds[:][col])}
    assert norm(train_task.questions, "text") & norm(eval_task.questions, "text") == set()
    assert norm(train_task.candidates, "context") & norm(eval_task.candidates, "context") == set()
    shared = norm(train_task.candidates, "sentence") & norm(eval_task.candidates, "sentence")
    assert shared == {"[उद्धरण वांछित]", "ए."}

    train = from_lareqa(train_task)
    leaked = {normalize_text(x) for x in train.texts(contexts=True)} & shared
    if leaked:
        with pytest.raises(DataLeakError, match=f"{len(leaked)} sentences"):
            check_no_overlap(train, eval_task)
    clean, dropped = remove_overlap(train, eval_task)
    check_no_overlap(clean, eval_task)
    assert (dropped > 0) == bool(leaked) and dropped <= 10 and len(clean) == len(train) - dropped
    with capsys.disabled():
        print(f"\n[{train_name} train vs {eval_name} eval] shared sentences in the pools: {len(shared)}; "
              f"in the training table: {len(leaked)}; items dropped by remove_overlap: {dropped}")
