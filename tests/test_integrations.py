"""hybridnb inside sentence-transformers and mteb (hybridnb.integrations), and the extended model card.

- The sentence-transformers batch sampler: it draws exactly HybridBatchSampler's batches (mapped to rows of the
  pair dataset); mono batches are one language, cross batches pair different languages, no item twice; the
  mixture's proportions; determinism per seed; resume (state, and the trainer's set_epoch + skip); two ranks
  behind accelerate's BatchSamplerShard agree on the kind of every step; bad layouts fail early.
- The LAReQA evaluator: its numbers are hybridnb.evaluation's on hybridnb Encoder embeddings of the same folder.
- A SentenceTransformerTrainer with the sampler and the evaluator trains 2 steps on a tiny model.
- The mteb task (skipped without mteb): mteb.evaluate's recall@1 / @10 (and map@1000 on a pool under 1000)
  per subset equal hybridnb's per-language multi numbers.
- Model cards: the default card is unchanged; the details (recipe, data, metrics with intervals, citation).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from hybridnb.data.retrieval_task import RetrievalTask
from hybridnb.data.train_data import ParallelTable
from hybridnb.evaluation import runner
from hybridnb.integrations import (
    HybridSTBatchSampler, LAReQAEvaluator, flat_metrics, hybrid_batch_sampler, pair_dataset, pair_layout,
    training_columns,
)
from hybridnb.training import HybridBatchSampler

import tiny_models
from conftest import needs_mirror

LANGS = ("en", "de", "fr")


def string_table(n_items: int = 48, seed: int = 0, missing: float = 0.15) -> ParallelTable:
    """tiny_models' synthetic table with plain-text passages (a sentence-transformers column holds one text)."""
    t = tiny_models.synthetic_table(n_items, LANGS, seed=seed, n_neg=2, missing=missing)
    first = lambda p: p[0] if isinstance(p, tuple) else p  # noqa: E731
    return ParallelTable(t.ids, t.languages, t.queries,
                         {g: [first(p) for p in t.positives[g]] for g in t.languages},
                         {g: [[first(p) for p in negs] for negs in t.hard_negatives[g]] for g in t.languages})


@pytest.fixture(scope="module")
def table():
    return string_table()


@pytest.fixture(scope="module")
def pairs(table):
    return pair_dataset(table, n_hard_negatives=1)


def sampler(pairs, batch_size=8, seed=0, **kw) -> HybridSTBatchSampler:
    return hybrid_batch_sampler(pairs, languages=list(LANGS), **kw)(training_columns(pairs), batch_size, seed=seed)


def triples(pairs, rows) -> list[tuple[str, str, str]]:
    cols = pairs.select_columns(["item", "query_language", "passage_language"])[:]
    return [(cols["item"][r], cols["query_language"][r], cols["passage_language"][r]) for r in rows]


# ------------------------------------------------------------------------------------------------
# the layout
# ------------------------------------------------------------------------------------------------


def test_pair_dataset_rows(table, pairs):
    k = table.available().sum(axis=1)
    assert len(pairs) == int((k * k).sum())
    assert pairs.column_names == ["item", "query_language", "passage_language", "anchor", "positive", "negative_1"]
    assert training_columns(pairs).column_names == ["anchor", "positive", "negative_1"]
    row = next(r for r in pairs if r["query_language"] != r["passage_language"])
    i = table.ids.index(row["item"])
    assert row["anchor"] == table.queries[row["query_language"]][i]
    assert row["positive"] == table.positives[row["passage_language"]][i]
    assert row["negative_1"] == table.hard_negatives[row["passage_language"]][i][0]
    layout = pair_layout(pairs, LANGS)
    np.testing.assert_array_equal(layout.available, table.available())
    assert layout.item_ids == table.ids


def test_bad_layouts_fail_early(table, pairs):
    with pytest.raises(ValueError, match="the training dataset still has the layout column"):
        hybrid_batch_sampler(pairs)(pairs, 8)
    cross_row = next(r for r, x in enumerate(pairs) if x["query_language"] != x["passage_language"])
    short = pairs.select([r for r in range(len(pairs)) if r != cross_row])
    with pytest.raises(ValueError, match="but no row .* cross batches need every ordered pair"):
        hybrid_batch_sampler(short)
    hybrid_batch_sampler(short, strategy="mono")  # mono batches need no cross rows
    mono_row = next(r for r, x in enumerate(pairs) if x["query_language"] == x["passage_language"] != "en")
    with pytest.raises(ValueError, match="has no mono row"):
        hybrid_batch_sampler(pairs.select([r for r in range(len(pairs)) if r != mono_row]))
    with pytest.raises(ValueError, match="repeats the pair"):
        hybrid_batch_sampler(pairs.select([*range(len(pairs)), 0]))
    with pytest.raises(ValueError, match="has 10 rows but the layout has"):
        hybrid_batch_sampler(pairs)(training_columns(pairs).select(range(10)), 4)
    with pytest.raises(ValueError, match="candidate_mode='sentence'"):
        pair_dataset(tiny_models.synthetic_table(8, LANGS))
    with pytest.raises(ValueError, match="3 requested"):
        pair_dataset(table, n_hard_negatives=3)
    with pytest.raises(ValueError, match="alpha must be in"):
        hybrid_batch_sampler(pairs, alpha=1.5)
    with pytest.raises(ValueError, match="mono batches need global_batch_size 44 distinct items in one language"):
        sampler(pairs, batch_size=22, world_size=2)  # the global batch (2 ranks) must fit the smallest language


# ------------------------------------------------------------------------------------------------
# batches
# ------------------------------------------------------------------------------------------------


def test_batches_are_hybrid_batch_samplers(table, pairs):
    """Built on HybridBatchSampler: the same draws, mapped to the rows of those (item, X, Y) pairs."""
    s = sampler(pairs, batch_size=8, seed=3, alpha=0.3)
    ref = HybridBatchSampler(table.available(), table.languages, 8, alpha=0.3, seed=3)
    batches = list(s)
    assert len(batches) == len(s) == len(table) // 8
    for rows in batches:
        pairs_ref = ref.next_global_batch().pairs
        want = [(table.ids[i], table.languages[q], table.languages[p]) for i, q, p in pairs_ref.tolist()]
        assert triples(pairs, rows) == want


@pytest.mark.parametrize("strategy,alpha", [("hybrid", 0.5), ({"mono": 0.2, "cross": 0.5, "mixed": 0.3}, None)])
def test_batch_composition_and_mixture(pairs, strategy, alpha):
    s = sampler(pairs, batch_size=6, seed=1, strategy=strategy, alpha=alpha, steps_per_epoch=300)
    kinds = s.sampler_.kind_schedule(300)
    counts = {k: 0 for k in ("mono", "cross", "mixed")}
    for kind, rows in zip(kinds, s):
        t = triples(pairs, rows)
        items = [i for i, _, _ in t]
        assert len(set(items)) == len(items) == 6  # no item twice: no parallel positive as a negative
        if kind == "mono":
            assert len({(x, y) for _, x, y in t}) == 1 and t[0][1] == t[0][2]
        elif kind == "cross":
            assert all(x != y for _, x, y in t)
        else:
            assert all(x == y for _, x, y in t)
        counts[kind] += 1
    weights = {"mono": 0.5, "cross": 0.5} if strategy == "hybrid" else strategy
    for kind, w in weights.items():  # binomial: within 4 standard deviations
        assert abs(counts[kind] / 300 - w) < 4 * np.sqrt(w * (1 - w) / 300), (kind, counts)
    assert sum(counts.values()) == 300


def test_deterministic_per_seed(pairs):
    a, b, c = (list(sampler(pairs, seed=s, steps_per_epoch=20)) for s in (5, 5, 6))
    assert a == b and a != c


def test_resume_continues_the_same_stream(pairs):
    """(1) the state after n batches, through JSON, continues identically; (2) a fresh sampler at epoch 1 with
    its first k batches skipped (what the trainer does on resume) yields what an uninterrupted run yields."""
    full = sampler(pairs, seed=2, steps_per_epoch=10)
    first = list(full)
    full.set_epoch(1)
    second = list(full)

    part = sampler(pairs, seed=2, steps_per_epoch=10)
    it = iter(part)
    head = [next(it) for _ in range(4)]
    state = json.loads(json.dumps(part.state_dict()))
    fresh = sampler(pairs, seed=2, steps_per_epoch=10)
    fresh.load_state_dict(state)
    cont = [fresh.layout.row_of(b.pairs).tolist() for b in
            (fresh.sampler_.next_global_batch() for _ in range(6))]
    assert head + cont == first

    resumed = sampler(pairs, seed=2, steps_per_epoch=10)
    resumed.set_epoch(1)
    assert list(resumed)[3:] == second[3:]
    resumed.set_epoch(0)  # back to an earlier epoch: replayed from the start
    assert list(resumed) == first


def test_two_ranks_draw_the_same_kind_at_each_step(table, pairs):
    """Two ranks (world_size=2) behind accelerate's BatchSamplerShard: per step the same kind and language,
    disjoint items, together the global batch of one process with the doubled batch size."""
    from accelerate.data_loader import BatchSamplerShard

    ranks = [BatchSamplerShard(sampler(pairs, batch_size=4, seed=7, world_size=2, steps_per_epoch=30),
                               num_processes=2, process_index=r) for r in range(2)]
    single = sampler(pairs, batch_size=8, seed=7, steps_per_epoch=30)
    kinds = single.sampler_.kind_schedule(30)
    steps = list(zip(*ranks))
    assert len(steps) == len(ranks[0]) == len(ranks[1]) == 30
    for kind, (r0, r1), whole in zip(kinds, steps, single):
        t0, t1 = triples(pairs, r0), triples(pairs, r1)
        assert r0 + r1 == whole and len(r0) == len(r1) == 4
        assert not {i for i, _, _ in t0} & {i for i, _, _ in t1}
        if kind == "mono":
            assert {(x, y) for _, x, y in t0} == {(x, y) for _, x, y in t1} and len({x for _, x, _ in t0}) == 1
        else:
            assert all(x != y for _, x, y in t0 + t1)


# ------------------------------------------------------------------------------------------------
# the evaluator
# ------------------------------------------------------------------------------------------------


def word_task(n_ids: int = 12, languages=LANGS, distractors: int = 6, seed: int = 0) -> RetrievalTask:
    """A pooled LAReQA-shaped task from tiny_models' vocabulary: per language one question and one answer
    sentence per id plus distractor sentences; relevant = the id's answer sentence in every language."""
    import datasets

    rng = random.Random(seed)
    seen: set[str] = set()

    def text(k):
        while True:
            t = " ".join(rng.choice(tiny_models.WORDS) for _ in range(k))
            if t not in seen:
                seen.add(t)
                return t

    q = {k: [] for k in ("qid", "id", "lang", "text", "answer_cid")}
    c = {k: [] for k in ("cid", "lang", "sentence", "context", "paragraph", "sentence_index")}
    answer = {}
    for g in languages:
        for n in range(n_ids + distractors):
            cid = len(c["cid"])
            for k, v in zip(c, (cid, g, text(6), text(10), f"{g}/{n}/0", 0)):
                c[k].append(v)
            if n < n_ids:
                answer[(g, n)] = cid
    for g in languages:
        for n in range(n_ids):
            for k, v in zip(q, (f"{g}/q{n}", f"q{n}", g, text(4) + " ?", answer[(g, n)])):
                q[k].append(v)
    relevant = [sorted(answer[(h, int(i[1:]))] for h in languages) for i in q["id"]]
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in relevant])]).astype(np.int64)
    return RetrievalTask("words", list(languages), datasets.Dataset.from_dict(q), datasets.Dataset.from_dict(c),
                         indptr, np.concatenate(relevant).astype(np.int64))


@pytest.fixture(scope="module")
def st_folder(tmp_path_factory):
    """A tiny BERT saved by Encoder.save (the sentence-transformers layout, prompts, README)."""
    return tiny_models.save_tiny_st(tmp_path_factory.mktemp("tiny_st"), dropout=0.0)


@pytest.fixture(scope="module")
def st_model(st_folder):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(st_folder), device="cpu")


@pytest.mark.parametrize("mode", ["sentence", "sentence+context"])
def test_evaluator_equals_hybridnb_evaluation(st_folder, st_model, mode):
    from hybridnb.models import Encoder

    task = word_task()
    evaluator = LAReQAEvaluator(task, candidate_mode=mode, name="words", batch_size=16)
    metrics = evaluator(st_model)
    assert evaluator.primary_metric == "words_multi_map" and evaluator.greater_is_better
    enc = Encoder.from_pretrained(str(st_folder))
    q = enc.encode(list(task.questions["text"]), "query", show_progress=False)
    c = enc.encode(task.candidate_inputs(mode), "passage", show_progress=False)
    ours = runner.score_task(task, q, c).summary()
    assert set(metrics) == {f"words_{s}_{m}" for s in ("mono", "cross", "multi") for m in ("map", "r@1", "r@10")} \
        | {"words_rank_distance"}
    for s in ("mono", "cross", "multi"):
        for m in ("map", "r@1", "r@10"):
            assert metrics[f"words_{s}_{m}"] == pytest.approx(ours[s][m], abs=1e-6)
    assert metrics["words_rank_distance"] == pytest.approx(ours["rank_distance"], abs=1e-6)
    assert 0 < metrics["words_multi_map"] < 1 and metrics["words_rank_distance"] > 0
    # fixed embeddings: the evaluator's scoring is hybridnb's evaluate, key for key
    rng = np.random.default_rng(0)
    qf, cf = rng.normal(size=(len(q), 8)), rng.normal(size=(len(c), 8))
    assert flat_metrics(evaluator.score(qf, cf)) == flat_metrics(runner.score_task(task, qf, cf))


def test_evaluator_rejects_bad_settings():
    task = word_task(n_ids=2, distractors=0)
    with pytest.raises(ValueError, match="primary_metric must be one of"):
        LAReQAEvaluator(task, primary_metric="rank_distance")
    with pytest.raises(ValueError, match="unknown candidate input mode"):
        LAReQAEvaluator(task, candidate_mode="context")


def test_trainer_runs_two_steps_with_sampler_and_evaluator(st_folder, tmp_path):
    """SentenceTransformerTrainer + hybrid batches + the LAReQA evaluator: 2 steps on the tiny model."""
    from sentence_transformers import (SentenceTransformer, SentenceTransformerTrainer,
                                       SentenceTransformerTrainingArguments)
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    model = SentenceTransformer(str(st_folder), device="cpu")
    before = [p.detach().clone() for p in model.parameters()]
    pairs = pair_dataset(string_table(24), n_hard_negatives=1)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=4, learning_rate=1e-3,
        batch_sampler=hybrid_batch_sampler(pairs, alpha=0.5), eval_strategy="steps", eval_steps=2,
        save_strategy="no", report_to=[], use_cpu=True, seed=0, logging_steps=1, disable_tqdm=True)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=training_columns(pairs),
                                         loss=MultipleNegativesRankingLoss(model),
                                         evaluator=LAReQAEvaluator(word_task(n_ids=6, distractors=2)))
    trainer.train()
    assert trainer.state.global_step == 2
    logged = {k for row in trainer.state.log_history for k in row}
    assert {"loss", "eval_lareqa_multi_map", "eval_lareqa_rank_distance"} <= logged
    assert any(not np.allclose(a, b.detach()) for a, b in zip(before, model.parameters()))


@needs_mirror
def test_docs_training_example_runs(st_folder, tmp_path, monkeypatch, capsys):
    """docs/sentence-transformers.md's training block, with the tiny model in place of E5 and 2 steps (run in
    this process: a fresh interpreter spends most of its time importing sentence-transformers)."""
    import re

    text = (Path(__file__).resolve().parents[1] / "docs" / "sentence-transformers.md").read_text(encoding="utf-8")
    section = text.split("## Train with hybrid batches", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1
    code = blocks[0].replace("Encoder.from_pretrained(OFFLINE_E5)", f"Encoder.from_pretrained({str(st_folder)!r})")
    code = code.replace("max_steps=20", "max_steps=2")
    assert code.count(str(st_folder)) == 1 and "max_steps=2," in code
    monkeypatch.chdir(tmp_path)  # the block writes its folders relative to the working directory
    exec(compile(code, "docs/sentence-transformers.md", "exec"), {"__name__": "docs_example"})
    printed = dict(re.findall(r"'eval_lareqa_([a-z_@0-9]+)': ([0-9.]+)", capsys.readouterr().out))
    assert {"mono_map", "cross_map", "multi_map", "rank_distance"} <= set(printed)
    assert (tmp_path / "st-e5-small" / "README.md").is_file()


# ------------------------------------------------------------------------------------------------
# the mteb task
# ------------------------------------------------------------------------------------------------


def test_mteb_task_agrees_with_hybridnb(st_folder, st_model, monkeypatch):
    mteb = pytest.importorskip("mteb")
    import huggingface_hub

    from hybridnb.integrations import lareqa_mteb_task
    from hybridnb.models import Encoder

    def no_hub(*args, **kwargs):
        raise AssertionError(f"the hub was called: {args} {kwargs}")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_hub)
    task = word_task(n_ids=10, distractors=4)
    assert task.num_candidates < 1000  # map@1000 is then the full-pool mAP
    results = mteb.evaluate(st_model, lareqa_mteb_task(task), cache=None, show_progress_bar=False)
    scores = {s["hf_subset"]: s for s in results.task_results[0].scores["test"]}
    assert sorted(scores) == sorted(LANGS)

    enc = Encoder.from_pretrained(str(st_folder))
    q = enc.encode(list(task.questions["text"]), "query", show_progress=False)
    c = enc.encode(task.candidate_inputs("sentence"), "passage", show_progress=False)
    per_language = runner.score_task(task, q, c).summary()["per_language"]
    ranked = ranked_metrics(task, q @ c.T)
    for g in LANGS:  # end to end: mteb rounds its averages to 5 decimals
        ours = {**per_language[g]["multi"], **ranked[g]}
        assert scores[g]["recall_at_10"] == pytest.approx(round(ours["r@10"], 5), abs=1e-6)
        assert scores[g]["recall_at_1"] == pytest.approx(round(ours["r@1"], 5), abs=1e-6)
        assert scores[g]["map_at_1000"] == pytest.approx(round(ours["map"], 5), abs=1e-6)
        assert scores[g]["ndcg_at_10"] == pytest.approx(round(ours["ndcg@10"], 5), abs=1e-5)
        assert scores[g]["mrr_at_10"] == pytest.approx(ours["mrr@10"], abs=1e-5)
    assert 0 < np.mean([scores[g]["recall_at_10"] for g in LANGS]) < 1


def ranked_metrics(task, scores: np.ndarray, k: int = 10) -> dict[str, dict[str, float]]:
    """nDCG@k and MRR@k per query language, by hand from the (questions, candidates) score matrix: binary
    gains, discount 1 / log2(rank + 1), ideal = the query's relevant candidates first; every query averaged."""
    out = {}
    langs = np.asarray(task.questions["lang"])
    for g in dict.fromkeys(langs):
        ndcg, mrr = [], []
        for i in np.flatnonzero(langs == g):
            relevant = set(int(x) for x in task.relevant(int(i)))
            top = np.argsort(-scores[i], kind="stable")[:k]
            hits = [int(cid) in relevant for cid in top]
            dcg = sum(1 / np.log2(r + 2) for r, hit in enumerate(hits) if hit)
            ideal = sum(1 / np.log2(r + 2) for r in range(min(len(relevant), k)))
            ndcg.append(dcg / ideal)
            mrr.append(next((1 / (r + 1) for r, hit in enumerate(hits) if hit), 0.0))
        out[str(g)] = {f"ndcg@{k}": float(np.mean(ndcg)), f"mrr@{k}": float(np.mean(mrr))}
    return out


def test_mteb_metrics_on_our_ranking_agree_to_1e6():
    """mteb rounds its averages to 5 decimals, so the unrounded check feeds one score matrix (ours) to mteb's
    own metric code (pytrec_eval per query, its MRR) and compares each average to hybridnb's evaluator (R@1,
    R@10, full-pool mAP as MAP@1000) and to the by-hand nDCG@10 / MRR@10 above, to 1e-6."""
    pytest.importorskip("mteb")
    from mteb._evaluators.retrieval_metrics import calculate_retrieval_scores

    from hybridnb.integrations.mteb_task import corpus_id

    task = word_task(n_ids=10, distractors=4, seed=3)
    rng = np.random.default_rng(0)
    n, d = task.num_candidates, 16
    q = rng.standard_normal((task.num_questions, d)).astype(np.float32)
    c = rng.standard_normal((n, d)).astype(np.float32)
    for i in range(task.num_questions):  # nudge each question toward its answers: mid-range metrics
        c[task.relevant(i)] += 0.4 * q[i]
    scores = q @ c.T
    per_language = runner.score_task(task, q, c).summary()["per_language"]
    ranked = ranked_metrics(task, scores)
    qids, langs = list(task.questions["qid"]), list(task.questions["lang"])
    for g in LANGS:
        rows = [i for i, lang in enumerate(langs) if lang == g]
        run = {qids[i]: {corpus_id(j, n): float(scores[i, j]) for j in range(n)} for i in rows}
        qrels = {qids[i]: {corpus_id(int(j), n): 1 for j in task.relevant(i)} for i in rows}
        got = calculate_retrieval_scores(run, qrels, k_values=[1, 10, 1000])
        mean = {key: float(np.mean([got.all_scores[qid][key] for qid in run]))
                for key in ("recall_1", "recall_10", "map_cut_1000", "ndcg_cut_10")}
        ours = {**per_language[g]["multi"], **ranked[g]}
        assert mean["recall_1"] == pytest.approx(ours["r@1"], abs=1e-6)
        assert mean["recall_10"] == pytest.approx(ours["r@10"], abs=1e-6)
        assert mean["map_cut_1000"] == pytest.approx(ours["map"], abs=1e-6)
        assert mean["ndcg_cut_10"] == pytest.approx(ours["ndcg@10"], abs=1e-6)
        assert got.mrr["MRR@10"] == pytest.approx(ours["mrr@10"], abs=1e-6)
        assert 0.05 < ours["ndcg@10"] < 0.95 and 0.05 < ours["r@10"] < 0.95  # not a degenerate ranking


def test_mteb_task_needs_language_tags():
    pytest.importorskip("mteb")
    from hybridnb.integrations import lareqa_mteb_task

    with pytest.raises(ValueError, match=r"no mteb language tag for \['xx'\]"):
        lareqa_mteb_task(word_task(n_ids=2, languages=("en", "xx"), distractors=0))
    task = lareqa_mteb_task(word_task(n_ids=2, languages=("en", "xx"), distractors=0),
                            iso_languages={"en": "eng-Latn", "xx": "fra-Latn"})
    task.load_data()
    split = task.dataset["en"]["test"]
    assert len(split["queries"]) == 2 and len(split["corpus"]) == 4
    assert all(len(docs) == 2 for docs in split["relevant_docs"].values())


# ------------------------------------------------------------------------------------------------
# model cards
# ------------------------------------------------------------------------------------------------

DEFAULT_CARD = """---
library_name: sentence-transformers
tags: [sentence-transformers, hybridnb, retrieval]
---

# A hybridnb dual encoder

Base model: `org/base`. Pooling: mean, L2-normalised; max length 256 tokens. Query prefix 'query: ', passage prefix 'passage: '.

## Training

- strategy: hybrid

## Use
"""


def test_default_card_is_unchanged():
    from hybridnb.models.encoders import EncoderConfig, model_card

    config = EncoderConfig("org/base", query_prefix="query: ", passage_prefix="passage: ")
    card = model_card(config, {"strategy": "hybrid"})
    assert card.startswith(DEFAULT_CARD) and "Citation" not in card and "Evaluation" not in card


def test_card_carries_recipe_data_metrics_and_citation(st_folder, tmp_path):
    from sentence_transformers import SentenceTransformer

    from hybridnb.models import PAPER_CITATION, CardDetails, Encoder

    runs = sorted((Path(__file__).parents[1] / "reports" / "runs").glob("cpu-hybrid-*-to-xquad-r-*/results.json"))
    results = json.loads(runs[0].read_text(encoding="utf-8"))  # a committed text run's results.json
    details = CardDetails.from_results(results, language=["en", "de"], license="mit", datasets=["xquad-r"])
    out = Encoder.from_pretrained(str(st_folder)).save(tmp_path / "carded", {"strategy": "hybrid"}, details)
    card = (out / "README.md").read_text(encoding="utf-8")
    front = card.split("---")[1]
    assert "language: [en, de]" in front and "license: mit" in front and "datasets: [xquad-r]" in front
    assert "## Training recipe" in card and f"- strategy: {results['training']['strategy']}" in card
    assert f"- training data: {results['training']['train_data']}" in card
    block = results["datasets"]["xquad-r"]
    low, high = block["multi"]["map"]["ci"]
    assert f"| multi | map | {block['multi']['map']['value']:.4f} | [{low:.4f}, {high:.4f}] |" in card
    assert "95% bootstrap interval over question ids (1000 resamples)" in card.replace(
        str(block["bootstrap"]["n_resamples"]), "1000")
    assert "rank distance (lower is better)" in card and PAPER_CITATION in card and "2408.10536" in card
    assert SentenceTransformer(str(out), device="cpu").encode_query(["hello world"]).shape == (1, 32)  # still loads
