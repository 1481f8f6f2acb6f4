"""Tests for hybridnb.data.lareqa: the LAReQA retrieval task (fixture-exact, real-data facts, bad input).

The hand-made fixture (tests/fixtures/lareqa/{en,de}.json):

  en  article 0 / para 0: s0 "The Rhine flows ... six countries."  <- a
                          s1 (its `sentences` entry differs from the context slice: a double space)
                          s2 "It reaches the North Sea at Rotterdam."  <- b, c (two questions, one sentence)
      article 1 / para 0: s0, s1 "It was first climbed in 1786."  <- d (id only in en)
  de  article 0 / para 0: s0 "... sechs Länder ... Rotterdam ..."  <- a, c
                          s1 "... Schweizer Alpen."  <- b
      article 1 / para 0: s0, s1 (no questions)

With languages (en, de): cids en 0-4, de 5-8; relevant sets by shared id:
  a {0, 5}   b {2, 6}   c {2, 5}   d {4}
(b and c share en s2 but have different ids, so their relevant sets differ.)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from hybridnb.data import lareqa, sources
from hybridnb.data.lareqa import build_task, language_stats, load_task, parse_file
from hybridnb.data.sources import ChecksumError

FIXTURES = Path(__file__).parent / "fixtures" / "lareqa"
EN, DE = FIXTURES / "en.json", FIXTURES / "de.json"


from conftest import REAL_MIRROR, needs_mirror  # noqa: E402


def _rel(task) -> dict[str, list[int]]:
    return {qid: task.relevant(i).tolist() for i, qid in enumerate(task.questions["qid"])}


# ------------------------------------------------------------------------------------------------
# Fixture: exact task
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy_task():
    return build_task("toy", {"en": EN, "de": DE})


def test_fixture_questions(toy_task):
    q = toy_task.questions
    assert list(q["qid"]) == ["en/a", "en/b", "en/c", "en/d", "de/a", "de/b", "de/c"]
    assert list(q["id"]) == ["a", "b", "c", "d", "a", "b", "c"]
    assert list(q["lang"]) == ["en"] * 4 + ["de"] * 3
    assert list(q["answer_cid"]) == [0, 2, 2, 4, 5, 6, 5]
    assert q[0]["text"] == "How many countries does the Rhine flow through?"
    assert toy_task.languages == ["en", "de"]


def test_fixture_candidates(toy_task):
    c = toy_task.candidates
    assert list(c["cid"]) == list(range(9))
    assert list(c["lang"]) == ["en"] * 5 + ["de"] * 4
    assert list(c["paragraph"]) == ["en/0/0"] * 3 + ["en/1/0"] * 2 + ["de/0/0"] * 2 + ["de/1/0"] * 2
    assert list(c["sentence_index"]) == [0, 1, 2, 0, 1, 0, 1, 0, 1]
    # the text is the `sentences` entry, not the context slice
    assert c[1]["sentence"] == "Its source is in the Swiss  Alps."
    assert "Its source is in the Swiss Alps." in c[1]["context"]
    assert c[2]["sentence"] == "It reaches the North Sea at Rotterdam."
    assert c[2]["context"] == c[0]["context"] != c[3]["context"]
    # a paragraph without questions still contributes its sentences
    assert c[8]["sentence"] == "Er wurde 1786 erstbestiegen."


def test_fixture_relevance(toy_task):
    assert _rel(toy_task) == {
        "en/a": [0, 5], "en/b": [2, 6], "en/c": [2, 5], "en/d": [4],
        "de/a": [0, 5], "de/b": [2, 6], "de/c": [2, 5],
    }
    assert toy_task.relevant_indptr.tolist() == [0, 2, 4, 6, 7, 9, 11, 13]
    assert toy_task.num_relevant.tolist() == [2, 2, 2, 1, 2, 2, 2]
    m = toy_task.relevance_matrix()
    assert m.shape == (7, 9) and m.nnz == 13 and m[0, 5] and not m[1, 5]
    assert toy_task.question_groups.tolist() == [0, 1, 2, 3, 0, 1, 2]
    assert toy_task.question_langs.tolist() == ["en"] * 4 + ["de"] * 3
    assert toy_task.candidate_langs.tolist() == ["en"] * 5 + ["de"] * 4
    assert toy_task.answer_cids.tolist() == [0, 2, 2, 4, 5, 6, 5]


def test_fixture_candidate_inputs(toy_task):
    pairs = toy_task.candidate_inputs()
    c5 = toy_task.candidates[5]
    assert len(pairs) == 9 and pairs[5] == (c5["sentence"], c5["context"])
    assert toy_task.candidate_inputs("sentence")[1] == "Its source is in the Swiss  Alps."
    with pytest.raises(ValueError, match="sentence\\+context"):
        toy_task.candidate_inputs("context")


def test_fixture_language_stats(toy_task):
    df = language_stats(toy_task)
    assert list(df.index) == ["en", "de", "all"]
    assert df.loc["en", "questions"] == 4 and df.loc["de", "candidates"] == 4
    assert df.loc["all", "paragraphs"] == 4
    assert df.loc["en", "mean_relevant"] == pytest.approx(7 / 4)
    sentences = toy_task.candidate_inputs("sentence")
    assert df.loc["de", "mean_sentence_chars"] == pytest.approx(np.mean([len(s) for s in sentences[5:]]))


def test_fixture_max_ids():
    task = build_task("toy", {"en": EN, "de": DE}, max_ids=2)  # ids a, b (order of the en file)
    assert list(task.questions["qid"]) == ["en/a", "en/b", "de/a", "de/b"]
    assert list(task.candidates["paragraph"]) == ["en/0/0"] * 3 + ["de/0/0"] * 2
    assert list(task.candidates["cid"]) == [0, 1, 2, 3, 4]
    assert _rel(task) == {"en/a": [0, 3], "en/b": [2, 4], "de/a": [0, 3], "de/b": [2, 4]}
    # English is the reference even when listed second; a larger max_ids keeps everything
    assert list(build_task("toy", {"de": DE, "en": EN}, max_ids=1).questions["qid"]) == ["de/a", "en/a"]
    assert len(build_task("toy", {"en": EN, "de": DE}, max_ids=99).questions) == 7


def test_fixture_single_language():
    task = build_task("toy", {"de": DE})
    assert _rel(task) == {"de/a": [0], "de/b": [1], "de/c": [0]}
    sub = build_task("toy", {"de": DE}, max_ids=1)  # reference = first language when en is absent
    assert list(sub.questions["qid"]) == ["de/a"] and len(sub.candidates) == 2


# ------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------


def _broken(tmp_path, mutate) -> Path:
    doc = json.loads(EN.read_text(encoding="utf-8"))
    mutate(doc)
    path = tmp_path / "en.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def test_parse_file_ok():
    paras = parse_file(EN, "en")
    assert [p.key for p in paras] == ["en/0/0", "en/1/0"]
    assert [(q.id, q.answer_sentence) for q in paras[0].questions] == [("a", 0), ("b", 2), ("c", 2)]


def test_parse_file_invalid_json(tmp_path):
    path = tmp_path / "en.json"
    path.write_text(EN.read_text(encoding="utf-8")[:500], encoding="utf-8")  # truncated
    with pytest.raises(ValueError, match=r"en\.json.*not valid JSON"):
        parse_file(path, "en")


@pytest.mark.parametrize("mutate, problem", [
    (lambda d: d.pop("data"), "missing key 'data'"),
    (lambda d: d["data"][0]["paragraphs"][0].pop("sentence_breaks"),
     r"data\[0\]\.paragraphs\[0\]: missing key 'sentence_breaks'"),
    (lambda d: d["data"][1]["paragraphs"][0]["qas"][0].pop("answers"), "missing key 'answers'"),
    (lambda d: d["data"][1]["paragraphs"][0]["qas"][0]["answers"][0].pop("answer_start"),
     "missing key 'answer_start'"),
    (lambda d: d["data"][0]["paragraphs"][0]["qas"][0].update(answers=[]), "has no answers"),
    (lambda d: d["data"][0]["paragraphs"][0]["sentences"].pop(), "3 sentences|2 sentences but 3"),
    (lambda d: d["data"][0]["paragraphs"][0]["qas"][0]["answers"][0].update(answer_start="24"),
     "expected int, got str"),
    # an answer_start in the gap between two sentences matches no sentence
    (lambda d: d["data"][0]["paragraphs"][0]["qas"][0]["answers"][0].update(answer_start=38),
     "answer_start 38 of question 'a' lies in 0 sentence spans"),
    (lambda d: d["data"][1]["paragraphs"][0]["qas"][0].update(id="a"), "question id 'a' appears twice"),
])
def test_parse_file_corrupt(tmp_path, mutate, problem):
    path = _broken(tmp_path, mutate)
    with pytest.raises(ValueError, match=problem) as exc:
        parse_file(path, "en")
    assert str(path) in str(exc.value)


def test_load_task_bad_arguments(tmp_path, monkeypatch):
    monkeypatch.setenv("HYBRIDNB_CACHE", str(tmp_path))
    with pytest.raises(ValueError, match="unknown task 'squad'.*xquad-r, mlqa-r"):
        load_task("squad")
    with pytest.raises(ValueError, match=r"'el'.*'mlqa-r'.*valid languages: ar, de, en, es, hi, vi, zh"):
        load_task("mlqa-r", languages=["en", "el"])
    with pytest.raises(ValueError, match="empty"):
        load_task("mlqa-r", languages=[])
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="max_ids"):
            load_task("xquad-r", max_ids=bad)
    assert list(tmp_path.iterdir()) == []  # nothing fetched or built


@needs_mirror
@pytest.mark.slow
def test_load_task_checksum_error_before_processing(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    for rel in ("lareqa/xquad-r/LICENSE", "lareqa/xquad-r/en.json"):
        (mirror / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REAL_MIRROR / rel, mirror / rel)
    data = bytearray((mirror / "lareqa/xquad-r/en.json").read_bytes())
    data[-10] = ord(" ") if data[-10] != ord(" ") else ord("\t")
    (mirror / "lareqa/xquad-r/en.json").write_bytes(bytes(data))
    monkeypatch.setenv("HYBRIDNB_MIRROR", str(mirror))
    monkeypatch.setenv("HYBRIDNB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ChecksumError, match="lareqa/xquad-r/en.json"):
        load_task("xquad-r", languages=["en"])
    assert not (tmp_path / "cache" / "processed").exists()
    assert not (tmp_path / "cache" / "raw/lareqa/xquad-r/en.json").exists()


# ------------------------------------------------------------------------------------------------
# Real data (slow): one build per session, in a temporary cache
# ------------------------------------------------------------------------------------------------

# Per-language (questions, candidates), from the LAReQA README.
XQUAD_R = {"ar": 1222, "de": 1276, "el": 1234, "en": 1180, "es": 1215, "hi": 1244, "ru": 1219, "th": 852,
           "tr": 1167, "vi": 1209, "zh": 1196}
MLQA_R = {"ar": (517, 2545), "de": (512, 2362), "en": (1148, 6264), "es": (500, 1787), "hi": (507, 2426),
          "vi": (511, 2828), "zh": (504, 2322)}


@pytest.fixture(scope="session")
def real(tmp_path_factory):
    if REAL_MIRROR is None:
        pytest.skip("no raw-data mirror (HYBRIDNB_MIRROR)")
    cache = tmp_path_factory.mktemp("hybridnb-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HYBRIDNB_MIRROR", str(REAL_MIRROR))
        mp.setenv("HYBRIDNB_CACHE", str(cache))
        tasks = {name: load_task(name) for name in ("xquad-r", "mlqa-r")}
    return {"cache": cache, **tasks}


@pytest.fixture
def real_env(real, monkeypatch):
    monkeypatch.setenv("HYBRIDNB_MIRROR", str(REAL_MIRROR))
    monkeypatch.setenv("HYBRIDNB_CACHE", str(real["cache"]))
    return real


def _check_common(task):
    n_q = task.num_questions
    # qids unique; cids are row indices
    assert len(set(task.questions["qid"])) == n_q
    assert np.array_equal(np.asarray(task.candidates["cid"]), np.arange(task.num_candidates))
    # CSR well-formed, sorted and unique per row
    indptr, indices = task.relevant_indptr, task.relevant_indices
    assert indptr[0] == 0 and indptr[-1] == len(indices) and np.all(np.diff(indptr) >= 1)
    assert indices.min() >= 0 and indices.max() < task.num_candidates
    for i in range(n_q):
        r = task.relevant(i)
        assert np.all(np.diff(r) > 0)
    # each question's own answer is relevant, and lies in its own language
    assert all(task.answer_cids[i] in task.relevant(i) for i in range(n_q))
    assert np.array_equal(task.candidate_langs[task.answer_cids], task.question_langs)
    # questions sharing an id share their relevant set
    groups = task.question_groups
    first = {}
    for i, g in enumerate(groups):
        j = first.setdefault(g, i)
        assert np.array_equal(task.relevant(i), task.relevant(j))
    # at most one relevant candidate per language
    for i in range(n_q):
        langs = task.candidate_langs[task.relevant(i)]
        assert len(set(langs)) == len(langs)


@pytest.mark.slow
def test_real_xquad_r(real):
    task = real["xquad-r"]
    assert task.languages == list(sources.XQUAD_R_LANGUAGES)
    assert task.num_questions == 13_090 and task.num_candidates == 13_014
    stats = language_stats(task, total=False)
    assert stats["questions"].to_dict() == {lang: 1190 for lang in XQUAD_R}
    assert stats["candidates"].to_dict() == XQUAD_R
    assert set(stats["paragraphs"]) == {240}
    _check_common(task)
    # XQuAD-R is 11-way parallel: exactly one relevant candidate per language, 11 in all
    assert set(task.num_relevant.tolist()) == {11}
    assert len(np.unique(task.question_groups)) == 1190
    # candidate text is the `sentences` entry, not the context slice (they differ for 2 Turkish sentences)
    raw = json.loads((REAL_MIRROR / "lareqa/xquad-r/tr.json").read_text(encoding="utf-8"))
    cid_of = {(p, si): cid for cid, p, si in zip(task.candidates["cid"], task.candidates["paragraph"],
                                                   task.candidates["sentence_index"])}
    differ = []
    for ai, article in enumerate(raw["data"]):
        for pi, para in enumerate(article["paragraphs"]):
            for si, (sentence, (b, e)) in enumerate(zip(para["sentences"], para["sentence_breaks"])):
                if para["context"][b:e] != sentence:
                    differ.append((cid_of[(f"tr/{ai}/{pi}", si)], sentence))
    assert len(differ) == 2
    assert all(task.candidates[cid]["sentence"] == sentence for cid, sentence in differ)


@pytest.mark.slow
def test_real_mlqa_r(real):
    task = real["mlqa-r"]
    assert task.languages == list(sources.MLQA_R_LANGUAGES)
    assert task.num_questions == 4_199 and task.num_candidates == 20_534
    stats = language_stats(task, total=False)
    assert {lang: (r.questions, r.candidates) for lang, r in stats.iterrows()} == MLQA_R
    _check_common(task)
    # every id has an English version plus 1-3 others: 2-4 relevant candidates
    assert set(task.num_relevant.tolist()) == {2, 3, 4}
    groups, sizes = np.unique(task.question_groups, return_counts=True)
    assert len(groups) == 1148
    assert np.array_equal(task.num_relevant, sizes[task.question_groups])


@pytest.mark.slow
def test_real_cache_reused(real_env, monkeypatch):
    def no_rebuild(*args, **kwargs):
        raise AssertionError("processed cache not reused")

    monkeypatch.setattr(lareqa, "build_task", no_rebuild)
    again = load_task("xquad-r")
    assert again.num_questions == 13_090
    assert np.array_equal(again.relevant_indices, real_env["xquad-r"].relevant_indices)
    assert lareqa.processed_dir("xquad-r").is_dir()
    assert lareqa.processed_dir("xquad-r", max_ids=5) != lareqa.processed_dir("xquad-r")
    # finished builds only, no temp folders left behind
    names = {p.name for p in (real_env["cache"] / "processed").iterdir()}
    assert {lareqa.processed_dir("xquad-r").name, lareqa.processed_dir("mlqa-r").name} <= names
    assert not any(n.startswith(".") for n in names)


@pytest.mark.slow
def test_real_max_ids(real_env):
    sub = load_task("xquad-r", max_ids=3)
    assert sub.num_questions == 33 and len(np.unique(sub.question_groups)) == 3
    assert set(sub.num_relevant.tolist()) == {11}
    _check_common(sub)
    full = real_env["xquad-r"]
    en_ids = [q for q, lang in zip(full.questions["id"], full.question_langs) if lang == "en"][:3]
    assert sorted(set(sub.questions["id"])) == sorted(en_ids)
    # every sentence of each kept paragraph, and only those
    kept = set(sub.candidates["paragraph"])
    assert sub.num_candidates == sum(p in kept for p in full.candidates["paragraph"])

    mlqa = real_env["mlqa-r"]
    full_mlqa_en_ids = [q for q, lang in zip(mlqa.questions["id"], mlqa.question_langs) if lang == "en"]
    sub = load_task("mlqa-r", languages=["de", "en"], max_ids=20)
    assert sub.languages == ["de", "en"]
    assert len(set(sub.questions["id"])) == 20
    assert (sub.question_langs == "en").sum() == 20  # ids come from the English file
    assert set(sub.questions["id"]) == set(full_mlqa_en_ids[:20])
    _check_common(sub)
    assert set(sub.num_relevant.tolist()) <= {1, 2}


@pytest.mark.slow
def test_a_damaged_processed_cache_is_found_and_rebuilt(real_env):
    """One flipped byte in the processed Arrow cache was used silently, and a truncated file failed on every
    rerun: meta.json records each file's sha256, and a cache that does not match is rebuilt with a warning."""
    task = load_task("xquad-r", languages=["en", "de"], max_ids=4)
    folder = lareqa.processed_dir("xquad-r", ["en", "de"], 4)
    assert lareqa.check_processed(folder) is None
    arrow = next(folder.glob("candidates/*.arrow"))
    data = bytearray(arrow.read_bytes())
    data[len(data) // 2] ^= 0xFF
    arrow.write_bytes(bytes(data))
    assert "does not match its recorded sha256" in lareqa.check_processed(folder)
    with pytest.warns(UserWarning, match="processed cache .* is damaged .*rebuilding"):
        again = load_task("xquad-r", languages=["en", "de"], max_ids=4)
    assert lareqa.check_processed(folder) is None and list(again.candidates["sentence"]) == list(task.candidates["sentence"])
    arrow.write_bytes(arrow.read_bytes()[:100])  # truncated
    with pytest.warns(UserWarning, match="damaged"):
        assert load_task("xquad-r", languages=["en", "de"], max_ids=4).num_questions == task.num_questions
