"""MIRACL dev (issue 21): local copies and the error without one, sharded resumable corpus encoding (also killed
under torchrun), exact and approximate faiss search, trec_eval metrics against hand-worked values, the study's
flow end to end with a tiny encoder, the report section and the CLI's up-front checks.

The encoder here is a hashed character-trigram bag (numpy, deterministic, milliseconds); the offline E5 runs
only in notebook 09 (nbval).
"""

from __future__ import annotations

import gzip
import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest

from hybridnb.data import miracl
from hybridnb.evaluation import dense_search, stats, trec_metrics
from hybridnb.evaluation.corpus_index import CorpusIndex, owned_shards, shard_count

ROOT = Path(__file__).resolve().parents[1]
LOCAL = ROOT / "tests" / "data" / "miracl"


class Trigrams:
    """Texts -> L2-normalised hashed character-trigram counts (16 dims); counts its calls and texts."""

    dim = 16

    def __init__(self, fail_after: int | None = None):
        self.calls, self.texts, self.fail_after = 0, 0, fail_after

    def encode(self, texts, role="passage", batch_size=64, show_progress=False, **_):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("killed")  # a process dying mid-way, after `fail_after` shards
        self.calls += 1
        self.texts += len(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for r, text in enumerate(texts):
            text = text if isinstance(text, str) else " ".join(text)
            text = ("q " if role == "query" else "p ") + text
            for i in range(max(1, len(text) - 2)):
                out[r, zlib.crc32(text[i:i + 3].encode()) % self.dim] += 1
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh cache and reports folder, no local copy from the environment."""
    monkeypatch.setenv("HYBRIDNB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HYBRIDNB_REPORTS", str(tmp_path / "reports"))
    monkeypatch.delenv(miracl.LOCAL_ENV, raising=False)
    return tmp_path


# ---- data -------------------------------------------------------------------------------------------------


def test_the_paper_languages_are_those_of_its_tables():
    from hybridnb.studies import paper_numbers

    assert miracl.PAPER_LANGUAGES == paper_numbers.MIRACL_LANGUAGES
    assert set(miracl.PAPER_LANGUAGES) <= set(miracl.MIRACL_LANGUAGES) and len(miracl.MIRACL_LANGUAGES) == 18


def test_the_shipped_local_copy_loads_in_both_layouts_and_is_cached(cache):
    assert miracl.check_available(["es", "zh"], "tests/data/miracl") == {"es": "local", "zh": "local"}
    data = miracl.load(["es", "zh"], "tests/data/miracl", show_progress=False)
    es, zh = data["es"], data["zh"]
    assert (es.n_passages, len(es.queries), zh.n_passages, len(zh.queries)) == (153, 32, 154, 32)
    # es from the hub's dev rows, zh from topics + TREC qrels: the same judgements either way
    rows = [json.loads(line) for line in (LOCAL / "es" / "dev.jsonl").read_text(encoding="utf-8").splitlines()]
    assert es.query_ids == [r["query_id"] for r in rows]
    for r in rows:
        assert es.qrels[r["query_id"]] == {**{p["docid"]: 0 for p in r["negative_passages"]},
                                           **{p["docid"]: 1 for p in r["positive_passages"]}}
    assert zh.qrels == miracl.read_qrels(LOCAL / "zh" / "qrels.tsv")
    assert all(sorted(set(q.values())) == [0, 1] for q in zh.qrels.values())
    assert es.meta["dropped_queries"] == 0 and es.meta["judged_not_in_corpus"] == 0
    # passages as encoder inputs, by row range
    first = json.loads((LOCAL / "es" / "corpus.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert es.passages("title text")[0:1] == [f"{first['title']} {first['text']}"]
    assert es.passages("pair")[0:1] == [(first["title"], first["text"])]
    assert es.passages("text")[0:1] == [first["text"]]
    assert es.docids(np.array([0, -1])) == [first["docid"], ""]
    # the second use reads the Arrow cache
    assert miracl.check_available(["es", "zh"], "tests/data/miracl") == {"es": "cached", "zh": "cached"}
    again = miracl.load_language("es", "tests/data/miracl", show_progress=False)
    assert again.fingerprint == es.fingerprint and again.query_ids == es.query_ids


def _write_lang(root: Path, lang: str, corpus, queries, qrels_lines) -> None:
    (root / lang).mkdir(parents=True, exist_ok=True)
    (root / lang / "corpus.jsonl").write_text("".join(json.dumps(p) + "\n" for p in corpus), encoding="utf-8")
    (root / lang / "topics.tsv").write_text("".join(f"{q}\t{t}\n" for q, t in queries), encoding="utf-8")
    (root / lang / "qrels.tsv").write_text("".join(qrels_lines), encoding="utf-8")


def test_judgements_are_kept_as_trec_eval_reads_them_and_unanswerable_queries_are_dropped(cache):
    corpus = [{"docid": f"d{i}", "title": "T", "text": f"passage {i}"} for i in range(5)]
    _write_lang(cache / "copy", "sw", corpus, [("1", "a"), ("2", "b"), ("3", "c")],
                ["1 Q0 d0 1\n", "1 Q0 d1 0\n", "1 Q0 gone 1\n",   # a relevant passage missing from the corpus
                 "2 Q0 d2 0\n",                                      # judged, but nothing relevant: dropped
                 "3 Q0 d3 1\n"])
    sw = miracl.load_language("sw", str(cache / "copy"), show_progress=False)
    assert sw.query_ids == ["1", "3"] and sw.meta["dropped_queries"] == 1
    assert sw.qrels["1"] == {"d0": 1, "d1": 0, "gone": 1}  # kept: recall counts it, as MIRACL's evaluation does
    assert sw.meta["judged_not_in_corpus"] == 1


def test_the_hub_repos_downloaded_as_they_are_are_a_local_copy(cache):
    root = cache / "hubcopy"
    (root / "miracl-v1.0-sw" / "topics").mkdir(parents=True)
    (root / "miracl-v1.0-sw" / "qrels").mkdir(parents=True)
    (root / "miracl-v1.0-sw" / "topics" / "topics.miracl-v1.0-sw-dev.tsv").write_text("7\tswali\n", encoding="utf-8")
    (root / "miracl-v1.0-sw" / "qrels" / "qrels.miracl-v1.0-sw-dev.tsv").write_text("7\tQ0\t2#0\t1\n", encoding="utf-8")
    (root / "miracl-corpus-v1.0-sw").mkdir()
    for i in (0, 1, 10, 2):  # docs-10 comes after docs-2, as the hub numbers them
        with gzip.open(root / "miracl-corpus-v1.0-sw" / f"docs-{i}.jsonl.gz", "wt", encoding="utf-8") as f:
            f.write(json.dumps({"docid": f"{i}#0", "title": f"t{i}", "text": f"x{i}"}) + "\n")
    sw = miracl.load_language("sw", str(root), show_progress=False)
    assert sw.docids(np.arange(4)) == ["0#0", "1#0", "2#0", "10#0"] and sw.qrels == {"7": {"2#0": 1}}


def test_a_changed_local_file_rebuilds_its_cache(cache):
    copy = cache / "copy"
    shutil.copytree(LOCAL / "zh", copy / "zh")
    first = miracl.load_language("zh", str(copy), show_progress=False)
    with open(copy / "zh" / "corpus.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"docid": "new#0", "title": "t", "text": "新的段落"}, ensure_ascii=False) + "\n")
    assert miracl.check_available(["zh"], str(copy)) == {"zh": "local"}
    second = miracl.load_language("zh", str(copy), show_progress=False)
    assert second.n_passages == first.n_passages + 1 and second.fingerprint != first.fingerprint


def test_without_network_or_local_copy_the_error_names_dataset_language_and_fix_before_any_download(cache,
                                                                                                    monkeypatch):
    import datasets
    import huggingface_hub

    def no_network(*a, **k):
        raise AssertionError("a network call was attempted")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    monkeypatch.setattr(huggingface_hub, "HfApi", no_network)
    monkeypatch.setattr(datasets, "load_dataset", no_network)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(miracl.MiraclUnavailable) as err:
        miracl.load(["sw", "bn"], None, show_progress=False)
    message = str(err.value)
    for part in ("MIRACL dev, language 'sw'", "miracl/miracl", "miracl/miracl-corpus", "HF_HUB_OFFLINE",
                 "miracl_local", miracl.LOCAL_ENV, "<root>/sw/corpus.jsonl", "docs/miracl.md"):
        assert part in message, part
    # a local copy without a language's files: named, before anything is read
    with pytest.raises(miracl.MiraclUnavailable, match=r"language 'bn': the local copy .* has no corpus .* and no dev "
                                                         r"queries"):
        miracl.check_available(["es", "bn"], "tests/data/miracl")
    with pytest.raises(miracl.MiraclUnavailable, match="is not a folder"):
        miracl.check_available(["es"], str(cache / "nowhere"))


def test_the_hub_path_reads_the_repos_files_and_streams_the_corpus_at_a_pinned_commit(cache, monkeypatch):
    """The hub replaced by local files: which files are asked for, and how the corpus is streamed."""
    import datasets
    import huggingface_hub

    for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(key, raising=False)
    commit, corpus_commit = "a" * 40, "b" * 40
    snapshot = cache / "hf" / "snapshots" / commit
    asked, streamed = [], []

    def hf_hub_download(repo, filename, repo_type=None):
        asked.append((repo, filename, repo_type))
        source = LOCAL / "zh" / ("topics.tsv" if "/topics/" in filename else "qrels.tsv")
        (snapshot / filename).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, snapshot / filename)
        return str(snapshot / filename)

    class Api:
        def dataset_info(self, repo):
            assert repo == "miracl/miracl-corpus"
            return type("Info", (), {"sha": corpus_commit})()

    real_load = datasets.load_dataset

    def load_dataset(builder, data_files=None, split=None, streaming=False, features=None):
        streamed.append((builder, data_files, split, streaming))
        return real_load("json", data_files=[str(LOCAL / "zh" / "corpus.jsonl")], split=split, streaming=streaming,
                         features=features)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    monkeypatch.setattr(huggingface_hub, "HfApi", Api)
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    zh = miracl.load_language("zh", None, show_progress=False)
    assert asked == [("miracl/miracl", "miracl-v1.0-zh/topics/topics.miracl-v1.0-zh-dev.tsv", "dataset"),
                     ("miracl/miracl", "miracl-v1.0-zh/qrels/qrels.miracl-v1.0-zh-dev.tsv", "dataset")]
    assert streamed == [("json", [f"hf://datasets/miracl/miracl-corpus@{corpus_commit}/miracl-corpus-v1.0-zh/"
                                  "docs-*.jsonl.gz"], "train", True)]
    assert zh.n_passages == 154 and len(zh.queries) == 32
    assert zh.meta["source"]["queries"]["revision"] == commit and zh.meta["source"]["corpus"]["revision"] == corpus_commit
    # the second use: from the cache, nothing asked of the hub
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert miracl.check_available(["zh"]) == {"zh": "cached"}
    assert miracl.load_language("zh", None, show_progress=False).fingerprint == zh.fingerprint and len(asked) == 2


def test_an_unreachable_hub_is_the_same_clear_error(cache, monkeypatch):
    import datasets
    import huggingface_hub

    def offline(*a, **k):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("the corpus was read before the topics"))
    for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(key, raising=False)
    assert miracl.check_available(["te"]) == {"te": "hub"}
    with pytest.raises(miracl.MiraclUnavailable, match=r"language 'te': cannot fetch miracl/miracl/miracl-v1.0-te/"
                                                         r"topics/.*ConnectionError.*miracl_local"):
        miracl.load_language("te", None, show_progress=False)


# ---- sharded, resumable encoding ----------------------------------------------------------------------------


def _texts(n: int) -> list[str]:
    return [f"passage number {i} about {'abcdefgh'[i % 8] * (1 + i % 5)}" for i in range(n)]


def _open(folder, n=103, shard_size=10, dtype="float32", model="trigrams", rank=0, on_mismatch="rebuild"):
    return CorpusIndex.open(folder, model=model, corpus="fp", n_passages=n, dim=Trigrams.dim, shard_size=shard_size,
                            dtype=dtype, inputs={"passage_format": "title text"}, rank=rank, on_mismatch=on_mismatch)


def test_shards_are_split_round_robin_over_ranks():
    assert shard_count(103, 10) == 11 and list(owned_shards(11, 1, 3)) == [1, 4, 7, 10]
    assert sorted(i for r in range(3) for i in owned_shards(11, r, 3)) == list(range(11))


def test_a_killed_rank_resumes_without_recomputing_and_gives_the_uninterrupted_embeddings(tmp_path):
    texts = _texts(103)
    reference = _open(tmp_path / "ref")
    reference.encode(Trigrams(), texts, show_progress=False, rank=0, world_size=1)
    expected = reference.load()

    index = _open(tmp_path / "idx")
    rank0 = Trigrams()
    done0 = index.encode(rank0, texts, show_progress=False, rank=0, world_size=2)
    assert done0["encoded"] == [0, 2, 4, 6, 8, 10] and rank0.calls == 6
    dying = Trigrams(fail_after=2)  # rank 1 dies after two of its five shards
    with pytest.raises(RuntimeError, match="killed"):
        index.encode(dying, texts, show_progress=False, rank=1, world_size=2)
    assert index.missing() == [5, 7, 9]
    assert not list(index.folder.glob(".*.tmp"))  # nothing half-written left behind

    rerun = Trigrams()
    done1 = _open(tmp_path / "idx", rank=1).encode(rerun, texts, show_progress=False, rank=1, world_size=2)
    assert done1["encoded"] == [5, 7, 9] and done1["skipped"] == [1, 3] and rerun.calls == 3
    assert rerun.texts == 30
    again = Trigrams()
    assert _open(tmp_path / "idx").encode(again, texts, show_progress=False, rank=0, world_size=2)["encoded"] == []
    assert again.calls == 0 and index.complete()
    np.testing.assert_array_equal(index.load(), expected)


def test_a_mismatched_index_is_rebuilt_by_rank_0_refused_elsewhere_never_mixed(tmp_path):
    texts = _texts(103)
    _open(tmp_path / "idx").encode(Trigrams(), texts, show_progress=False, rank=0, world_size=1)
    with pytest.raises(ValueError, match=r"other settings \(model: 'trigrams' on disk, 'other' now\)"):
        _open(tmp_path / "idx", model="other", on_mismatch="refuse")
    with pytest.raises(RuntimeError, match="rank 1: .*shard_size: 10 on disk, 20 now.*rank 0 rebuilds it"):
        _open(tmp_path / "idx", shard_size=20, rank=1)
    rebuilt = _open(tmp_path / "idx", model="other")
    assert rebuilt.missing() == list(range(11))  # every old shard removed
    assert json.loads((tmp_path / "idx" / "manifest.json").read_text())["model"] == "other"


def test_float16_storage_halves_the_file_and_keeps_the_embeddings(tmp_path):
    texts = _texts(40)
    full = _open(tmp_path / "f32", n=40)
    full.encode(Trigrams(), texts, show_progress=False, rank=0, world_size=1)
    half = _open(tmp_path / "f16", n=40, dtype="float16")
    half.encode(Trigrams(), texts, show_progress=False, rank=0, world_size=1)
    assert half.shard(0).dtype == np.float16
    np.testing.assert_allclose(half.load(), full.load(), atol=1e-3)


def test_a_kill_under_torchrun_resumes_and_matches_one_process(tmp_path):
    """Two real processes (torchrun, gloo): rank 1 is SIGKILLed after its first shard; torchrun stops the job;
    the rerun encodes exactly the missing shards, and the embeddings equal a one-process run's."""
    script = tmp_path / "encode.py"
    script.write_text(textwrap.dedent(f"""
        import json, os, signal, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_miracl import Trigrams, _texts
        from hybridnb.evaluation.corpus_index import CorpusIndex
        from hybridnb.training import distributed

        folder, log, kill = sys.argv[1], sys.argv[2], sys.argv[3] == "kill"
        distributed.init()
        rank, world = distributed.rank(), distributed.world_size()

        class Dying(Trigrams):
            def encode(self, texts, **kw):
                if kill and rank == 1 and self.calls == 1:
                    os.kill(os.getpid(), signal.SIGKILL)
                return super().encode(texts, **kw)

        with distributed.main_first():
            index = CorpusIndex.open(folder, model="trigrams", corpus="fp", n_passages=103, dim=16, shard_size=10)
        done = index.encode(Dying(), _texts(103), show_progress=False)
        with open(f"{{log}}.{{rank}}", "w") as f:
            json.dump(done, f)
        distributed.barrier()
        distributed.cleanup()
    """))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("RANK", None), env.pop("WORLD_SIZE", None)
    one = subprocess.run([sys.executable, str(script), str(tmp_path / "one"), str(tmp_path / "one.log"), "no"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
                str(tmp_path / "two")]
    killed = subprocess.run(torchrun + [str(tmp_path / "killed.log"), "kill"], env=env, capture_output=True, text=True,
                            timeout=300)
    assert killed.returncode != 0
    index = CorpusIndex(tmp_path / "two", json.loads((tmp_path / "two" / "manifest.json").read_text()))
    written = set(range(index.n_shards)) - set(index.missing())
    assert 1 in written and 3 not in written  # rank 1 wrote its first shard, then died
    resumed = subprocess.run(torchrun + [str(tmp_path / "resumed.log"), "no"], env=env, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    encoded = [json.loads(Path(f"{tmp_path / 'resumed.log'}.{r}").read_text())["encoded"] for r in (0, 1)]
    assert not set(encoded[0] + encoded[1]) & written                         # nothing finished was recomputed
    assert set(encoded[0] + encoded[1]) | written == set(range(index.n_shards))
    assert all(i % 2 == r for r in (0, 1) for i in encoded[r])               # rank r: shards r, r + 2, ...
    reference = CorpusIndex(tmp_path / "one", json.loads((tmp_path / "one" / "manifest.json").read_text()))
    np.testing.assert_array_equal(index.load(), reference.load())


# ---- search -------------------------------------------------------------------------------------------------


class Rows:
    """An 'encoder' that returns preset vectors: passages are row numbers."""

    def __init__(self, vectors):
        self.vectors, self.dim = vectors, vectors.shape[1]

    def encode(self, rows, **_):
        return self.vectors[np.asarray(rows, dtype=np.int64)]


def _index(folder, vectors, shard_size):
    index = CorpusIndex.open(folder, model="rows", corpus=str(len(vectors)), n_passages=len(vectors),
                             dim=vectors.shape[1], shard_size=shard_size, rank=0)
    index.encode(Rows(vectors), list(range(len(vectors))), show_progress=False, rank=0, world_size=1)
    return index


def test_exact_search_over_shards_is_a_brute_force_search(tmp_path):
    rng = np.random.default_rng(0)
    corpus = rng.standard_normal((1000, 32)).astype(np.float32)
    queries = rng.standard_normal((20, 32)).astype(np.float32)
    index = _index(tmp_path / "idx", corpus, shard_size=128)  # 8 shards, the last one shorter
    scores, rows = dense_search.search(index, queries, 100)
    brute = queries.astype(np.float64) @ corpus.T.astype(np.float64)
    expected = np.argsort(-brute, axis=1, kind="stable")[:, :100]
    np.testing.assert_array_equal(rows, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(brute, expected, 1), rtol=1e-5, atol=1e-5)
    # more hits asked than passages: padded with -1 and -inf
    small = _index(tmp_path / "small", corpus[:30], shard_size=8)
    s, r = dense_search.search(small, queries, 100)
    assert (r[:, 30:] == -1).all() and np.isneginf(s[:, 30:]).all()
    assert sorted(r[0, :30]) == list(range(30))


@pytest.mark.parametrize("spec", [{"type": "ivf", "params": {"nlist": 16, "nprobe": 2, "train_size": 2000}},
                                  {"type": "hnsw", "params": {"M": 16, "ef_construction": 64, "ef_search": 32}}])
def test_an_approximate_index_finds_the_exact_top_1_on_an_easy_set(tmp_path, spec):
    from hybridnb import file_hashes

    rng = np.random.default_rng(1)
    centres = rng.standard_normal((16, 24)) * 4
    corpus = (centres[rng.integers(0, 16, 2000)] + rng.standard_normal((2000, 24))).astype(np.float32)
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    queries = corpus[rng.choice(2000, 50, replace=False)] + 0.01 * rng.standard_normal((50, 24)).astype(np.float32)
    index = _index(tmp_path / "idx", corpus, shard_size=300)
    _, exact = dense_search.search(index, queries, 100)
    _, approx = dense_search.search(index, queries, 100, spec)
    np.testing.assert_array_equal(approx[:, 0], exact[:, 0])
    saved = list(index.folder.glob(f"{spec['type']}-*.faiss"))
    assert len(saved) == 1  # built once, saved beside the shards
    stamp = saved[0].stat().st_mtime_ns
    dense_search.search(index, queries, 100, spec)
    assert saved[0].stat().st_mtime_ns == stamp  # reused, not rebuilt
    data = bytearray(saved[0].read_bytes())
    data[len(data) // 2] ^= 0x01  # a flipped byte still loads in faiss: its sha256 sidecar sees it
    saved[0].write_bytes(bytes(data))
    _, again = dense_search.search(index, queries, 100, spec)
    np.testing.assert_array_equal(again, approx)  # built again, the same index
    assert file_hashes.sidecar_problem(saved[0]) is None


def test_index_settings_are_checked():
    assert dense_search.check_index(None) == ("flat", {})
    assert dense_search.check_index({"type": "ivf", "params": {"nprobe": 8}})[1]["nprobe"] == 8
    with pytest.raises(ValueError, match="type must be one of 'flat', 'ivf', 'hnsw', got 'pq'"):
        dense_search.check_index({"type": "pq"})
    with pytest.raises(ValueError, match=r"params \['nprobe'\] do not apply to 'hnsw'"):
        dense_search.check_index({"type": "hnsw", "params": {"nprobe": 3}})


# ---- metrics --------------------------------------------------------------------------------------------------


def test_trec_eval_metrics_match_hand_worked_values():
    qrels = {"q1": {"d1": 1, "d2": 0, "d3": 1},
             "q2": {"d5": 1, "d6": 1, "d7": 1},
             "q3": {"d8": 1},                      # not in the run: 0 (trec_eval -c)
             "q4": {"d9": 1}}                      # its relevant passage at rank 101: outside Recall@100
    run = {"q1": {"d2": 0.9, "d1": 0.5, "d4": 0.3, "d3": 0.1},
           "q2": {"d5": 0.8, "x1": 0.7, "x2": 0.6},
           "q4": {**{f"y{i}": 2.0 - i / 100 for i in range(100)}, "d9": 0.5}}
    got = trec_metrics.per_query(qrels, run, ["q1", "q2", "q3", "q4"])
    ndcg_q1 = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))   # relevant at ranks 2 and 4
    ndcg_q2 = 1 / (1 + 1 / math.log2(3) + 1 / math.log2(4))                     # 1 of 3 relevant, at rank 1
    np.testing.assert_allclose(got["ndcg@10"], [ndcg_q1, ndcg_q2, 0, 0], atol=1e-12)
    np.testing.assert_allclose(got["recall@100"], [1, 1 / 3, 0, 0], atol=1e-12)
    assert abs(ndcg_q1 - 0.6509209298) < 1e-9


def test_a_run_is_built_from_top_k_rows_without_the_empty_ones():
    docids = np.array(["a", "b", "c"])
    run = trec_metrics.run_dict(["q1", "q2"], np.array([[2, 0], [1, -1]]), np.array([[0.9, 0.1], [0.5, -np.inf]]),
                                lambda rows: list(docids[rows]))
    assert run == {"q1": {"c": 0.9, "a": 0.1}, "q2": {"b": 0.5}}


def test_per_query_results_take_the_bootstrap_and_paired_tests():
    rng = np.random.default_rng(0)
    parts = {"sw": ([f"{i}" for i in range(30)], {"ndcg@10": rng.random(30), "recall@100": rng.random(30)}),
             "th": ([f"{i}" for i in range(20)], {"ndcg@10": rng.random(20), "recall@100": rng.random(20)})}
    result = trec_metrics.from_languages(parts)
    macro = np.mean([parts[x][1]["ndcg@10"].mean() for x in parts])
    cis = stats.confidence_intervals(result, n_resamples=200, seed=0)
    assert cis["mono"]["ndcg@10"]["estimate"] == pytest.approx(macro)
    assert cis["mono"]["ndcg@10"]["low"] < macro < cis["mono"]["ndcg@10"]["high"] and cis["n_groups"] == 50
    assert result.summary()["per_language"]["th"]["ndcg@10"] == pytest.approx(parts["th"][1]["ndcg@10"].mean())
    assert result.subset("th").macro("recall@100") == pytest.approx(parts["th"][1]["recall@100"].mean())
    better = trec_metrics.from_languages({k: (q, {m: np.minimum(v + 0.2, 1) for m, v in d.items()})
                                          for k, (q, d) in parts.items()})
    cmp = stats.compare(better, result, n_resamples=200, seed=0)
    assert cmp["mono"]["ndcg@10"]["diff"] > 0 and cmp["mono"]["ndcg@10"]["p_value"] < 0.05


def test_per_query_results_round_trip(tmp_path):
    result = trec_metrics.from_languages({"ko": (["1", "2"], {"ndcg@10": np.array([0.5, 1.0]),
                                                              "recall@100": np.array([1.0, 0.0])})})
    result.save(tmp_path / "per_query.npz")
    back = trec_metrics.TrecResult.load(tmp_path / "per_query.npz")
    assert back.languages == ["ko"] and list(back.q_group) == ["ko/1", "ko/2"]
    np.testing.assert_array_equal(back.per_query["ndcg@10"], [0.5, 1.0])


# ---- the study: settings, flow, reuse, report -----------------------------------------------------------


def _profile(**change):
    from hybridnb import config

    return {**config.load_profile("ci"), **change}


@pytest.mark.parametrize("key, value, message", [
    ("miracl_top_k", 50, "miracl_top_k must be an int >= 100, got 50"),
    ("miracl_languages", ["es", "xx"], "unknown language\\(s\\) 'xx' for MIRACL"),
    ("miracl_dtype", "int8", "miracl_dtype must be one of 'float32', 'float16'"),
    ("miracl_index", {"type": "annoy"}, "miracl_index type must be one of"),
    ("miracl_passage_format", "title", "miracl_passage_format must be one of"),
    ("miracl_backbones", ["bm25"], "bm25 is lexical"),
    ("miracl_shard_size", 0, "miracl_shard_size must be an int >= 1"),
])
def test_bad_settings_are_named_before_any_work(key, value, message):
    from hybridnb.studies import miracl_eval

    with pytest.raises(ValueError, match=message):
        miracl_eval.check_settings(_profile(**{key: value}))


def test_the_study_runs_end_to_end_reuses_its_results_and_fills_the_report(cache, monkeypatch):
    from hybridnb import reporting
    from hybridnb.studies import miracl_eval

    params = _profile(miracl_shard_size=40)
    assert "\n".join(miracl_eval.report_section({"profile": "ci"})).count(miracl_eval.NOT_RUN) == 1
    encoders = []

    def load(system, max_length):
        encoders.append(Trigrams())
        return encoders[-1]

    monkeypatch.setattr(miracl_eval, "_load_encoder", load)
    collected = miracl_eval.run(params, show_progress=False)
    assert list(miracl_eval.systems_of(collected)) == ["zero-shot"]
    assert len(collected["_notes"]) == 3  # no finished run in this empty reports folder: listed, not trained
    res = collected["zero-shot"]["results"]
    assert res["settings"]["metric_library"].startswith("pytrec-eval-terrier")
    assert list(res["languages"]) == ["es", "zh"] and res["languages"]["es"]["n_queries"] == 32
    macro = np.mean([res["languages"][x]["ndcg@10"]["value"] for x in ("es", "zh")])
    assert res["macro"]["ndcg@10"]["value"] == pytest.approx(macro)
    low, high = res["macro"]["ndcg@10"]["ci"]
    assert low <= macro <= high
    assert encoders[0].calls == 4 + 4 + 2  # 4 + 4 corpus shards of 40 passages, then each language's queries
    per_query = trec_metrics.TrecResult.load(collected["zero-shot"]["dir"] / "per_query.npz")
    assert per_query.n_queries == 64
    run_files = list((cache / "cache" / "miracl" / "index").glob("*/*/run.top100.trec.gz"))
    assert len(run_files) == 2
    # a second run reuses the results: no encoder is even loaded
    again = miracl_eval.run(params, show_progress=False)
    assert len(encoders) == 1 and again["zero-shot"]["results"]["macro"] == res["macro"]
    # REPORT.md's section now prints ours beside the paper's rows for the same languages
    section = "\n".join(miracl_eval.report_section({"profile": "ci"}))
    assert section.startswith("## MIRACL dev (notebook 09)")
    assert miracl_eval.NOT_RUN not in section and "| zero-shot |" in section
    assert "| XLM-R | hybrid | Table 12 |" in section and "ndcg@10 mean (es, zh)" in section
    assert "the ci stand-in built from XQuAD-R" in section
    md = miracl_eval.report_markdown(params, collected, miracl_eval.significance(collected, 50, 0),
                                     reporting.provenance("ci"))
    assert "Not evaluated:" in md and "no finished run ci-hybrid" in md


def test_make_reproduce_runs_miracl_only_where_the_profile_says_after_its_runs_and_before_report():
    from hybridnb import config, pipeline

    paper = [name for _, name, _ in pipeline.jobs(config.load_profile("paper"), pipeline.NOTEBOOKS)]
    assert paper.index("06_backbones.ipynb") < paper.index("09_miracl.ipynb") == paper.index("04_compare.ipynb") - 1
    ci = [name for _, name, _ in pipeline.jobs(config.load_profile("ci"), pipeline.NOTEBOOKS)]
    assert "09_miracl.ipynb" not in ci


def test_the_cli_refuses_bad_settings_in_one_line(capsys):
    from hybridnb import cli

    assert cli.main(["miracl", "--profile", "ci", "--set", "miracl_top_k=10"]) == 2
    err = capsys.readouterr().err
    assert "hybridnb miracl: error: miracl_top_k must be an int >= 100, got 10" in err
    assert cli.main(["miracl", "--profile", "ci", "--set", "miracl_topk=100"]) == 2  # an unknown key: one line too
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hybridnb miracl: error: ") and "miracl_topk" in err[0]
