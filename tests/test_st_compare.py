"""hybridnb's recipe in SentenceTransformerTrainer (hybridnb.integrations.st_training) and the comparison with
hybridnb's own trainer (hybridnb.studies.st_compare).

- The trainer is the recipe: the sampler's batches (the same triples and texts as hybridnb's trainer with the same
  seed), E5's prompts, MNRL's scale = 1 / temperature, hybridnb's weight-decay groups and schedule, bf16 exactly
  where hybridnb autocasts, and the best-validation-loss weights at the end (3 steps on a tiny model).
- The comparison table: synthetic per-query results where ST equals hybridnb within seed noise, then moves past
  it (the verdict flips), and the timing table's ratios and machine notes.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from hybridnb import config
from hybridnb.data.train_data import ParallelTable, collate, split_validation
from hybridnb.integrations.st_training import STEncoderView, build_st_trainer, train_st
from hybridnb.studies import st_compare
from hybridnb.training import trainer as hybridnb_trainer

import tiny_models
from conftest import needs_mirror

LANGS = ("en", "de", "fr")


def sentence_table(n_items: int = 40, seed: int = 0) -> ParallelTable:
    """tiny_models' synthetic table with plain-text passages (the sentence of each (sentence, context) pair)."""
    t = tiny_models.synthetic_table(n_items, LANGS, seed=seed, n_neg=2, missing=0.15)
    first = lambda x: x[0] if isinstance(x, tuple) else x  # noqa: E731
    return ParallelTable(t.ids, t.languages, t.queries,
                         {g: [None if p is None else first(p) for p in t.positives[g]] for g in t.languages},
                         {g: [[first(n) for n in negs] for negs in t.hard_negatives[g]] for g in t.languages})


@pytest.fixture(scope="module")
def st_folder(tmp_path_factory):
    return tiny_models.save_tiny_st(tmp_path_factory.mktemp("tiny_st"), dropout=0.1)


def st_model(folder):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu")
    model.max_seq_length = 32
    return model


def recipe(**changes) -> config.TextTraining:
    base = dict(steps=3, batch_size=6, lr=1e-3, weight_decay=0.01, warmup_ratio=0.34, temperature=0.05,
                n_hard_negatives=1, val_every=2, val_batches=2, train_dtype="float32", seed=3)
    return config.TextTraining(**{**base, **changes})


def test_trainer_is_the_recipe(st_folder, tmp_path):
    """Batches, texts, prompts, loss scale, weight-decay groups, schedule and precision, before training."""
    train, _ = split_validation(sentence_table(), 0.2, seed=0)
    cfg = recipe()
    model = st_model(st_folder)
    trainer = build_st_trainer(model, train, cfg, tmp_path / "out")
    # the loss: MNRL with scale 1 / temperature
    assert type(trainer.loss).__name__ == "MultipleNegativesRankingLoss"
    assert trainer.loss.scale == pytest.approx(1 / cfg.temperature)
    assert type(build_st_trainer(st_model(st_folder), train, recipe(gradcache=True, chunk_size=4),
                                 tmp_path / "gc").loss).__name__ == "CachedMultipleNegativesRankingLoss"
    # E5's prefixes on every column
    assert trainer.args.prompts == {"anchor": "query: ", "positive": "passage: ", "negative_1": "passage: "}
    # weight decay: every >= 2-dim tensor decayed, biases and LayerNorm weights not (hybridnb's groups)
    names = {id(p): n for n, p in model.named_parameters()}
    decay, no_decay = trainer.optimizer.param_groups
    assert decay["weight_decay"] == cfg.weight_decay and no_decay["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim < 2 for p in no_decay["params"])
    undecayed = {names[id(p)] for p in no_decay["params"]}
    assert undecayed and all(n.endswith("bias") or "LayerNorm" in n for n in undecayed)
    assert {n for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n} == undecayed
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    # linear warm-up (round(0.34 * 3) = 1 step) then linear decay to 0, as hybridnb's schedule
    ours = hybridnb_trainer.build_scheduler(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.lr), 1, 3)
    assert trainer.lr_scheduler.lr_lambdas[0](0) == ours.lr_lambdas[0](0) == 0.0
    assert [trainer.lr_scheduler.lr_lambdas[0](s) for s in range(4)] == [ours.lr_lambdas[0](s) for s in range(4)]
    # bf16 autocast exactly where hybridnb's trainer uses it
    assert trainer.args.bf16 is False
    assert build_st_trainer(st_model(st_folder), train, recipe(train_dtype="bfloat16"), tmp_path / "bf").args.bf16
    # the batches: hybridnb's sampler with the same seed draws the same triples, and the collated texts are the
    # ones hybridnb's trainer would embed (prefix included)
    ours = hybridnb_trainer.check_config(cfg, train)
    view = STEncoderView(model)
    loader = trainer.get_train_dataloader()
    for step, batch in zip(range(cfg.steps), loader):
        pairs = ours.next_batch().pairs
        queries, positives, negatives = collate(train, pairs, cfg.n_hard_negatives)
        for column, texts, kind in (("anchor", queries, "query"), ("positive", positives, "passage"),
                                    ("negative_1", negatives, "passage")):
            expected = view.tokenize(texts, kind)["input_ids"]
            assert torch.equal(batch[f"{column}_input_ids"], expected), (step, column)


def test_training_keeps_the_best_validation_loss(st_folder, tmp_path):
    """3 steps, validated at steps 2 and 3: the weights returned have the lowest validation loss, which the
    run's history records, and every step has its time."""
    table = sentence_table(48)
    train, val = split_validation(table, 0.25, seed=0)
    cfg = recipe()
    model = st_model(st_folder)
    before = [p.detach().clone() for p in model.parameters()]
    result = train_st(model, train, val, cfg, tmp_path / "out")
    assert [r["step"] for r in result.history] == [0, 1, 2]
    assert all(r["step_s"] > 0 and r["loss"] is not None and math.isfinite(r["loss"]) for r in result.history)
    assert [r["lr"] for r in result.history] == pytest.approx([0.0, 1e-3, 5e-4])  # each step's own: warm-up, decay
    validated = {r["step"] + 1: r["val_loss"] for r in result.history if "val_loss" in r}
    assert set(validated) == {2, 3}
    assert result.best_step == min(validated, key=lambda s: (validated[s], s))
    assert result.best_val_loss == validated[result.best_step]
    batches = hybridnb_trainer.fixed_validation_batches(cfg, val)
    again = hybridnb_trainer.validation_scores(STEncoderView(result.model), val, batches, cfg)["loss"]
    assert again == pytest.approx(result.best_val_loss, abs=1e-5)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    # a timing run: no validation, the last weights
    timing = train_st(st_model(st_folder), train, None, cfg.replace(steps=2), tmp_path / "t", validate=False)
    assert timing.best_step == -1 and len(timing.step_seconds) == 2 and "val_loss" not in timing.history[-1]


def test_no_widget_examples_are_sampled_and_training_never_needed_them(st_folder, tmp_path, monkeypatch, capsys):
    """sentence-transformers would sample model-card widget examples when the trainer is made (a progress bar in
    executed notebooks, draws from Python's global random after the trainer seeded it). build_st_trainer skips
    that and leaves the card's widget as it was; a run whose trainer draws from Python's random after it is made
    (what the sampling did) trains to the same losses and weights, bit for bit."""
    import random

    from sentence_transformers import SentenceTransformerTrainer

    train, _ = split_validation(sentence_table(), 0.2, seed=0)
    cfg = recipe(steps=2)
    model = st_model(st_folder)
    first = train_st(model, train, None, cfg, tmp_path / "a", validate=False)
    assert "Computing widget examples" not in capsys.readouterr().err
    assert model.model_card_data.widget == []
    made = SentenceTransformerTrainer.__init__

    def made_then_drawn(self, *args, **kwargs):
        made(self, *args, **kwargs)
        random.choices(range(10), k=5), random.sample(range(1000), k=100)  # what set_widget_examples draws

    monkeypatch.setattr(SentenceTransformerTrainer, "__init__", made_then_drawn)
    second = train_st(st_model(st_folder), train, None, cfg, tmp_path / "b", validate=False)
    assert [r["loss"] for r in first.history] == [r["loss"] for r in second.history]
    assert all(torch.equal(a, b) for a, b in zip(first.model.parameters(), second.model.parameters()))


def test_passages_must_be_sentences(st_folder, tmp_path):
    table = tiny_models.synthetic_table(24, LANGS, n_neg=1)  # (sentence, context) passages
    with pytest.raises(ValueError, match="candidate_mode='sentence'"):
        build_st_trainer(st_model(st_folder), table, recipe(), tmp_path)



def test_masked_false_negatives_are_refused_not_dropped(st_folder, tmp_path):
    table = tiny_models.synthetic_table(24, LANGS, n_neg=1)
    with pytest.raises(ValueError, match="mask_false_negatives is not supported"):
        train_st(st_model(st_folder), table, None, recipe(mask_false_negatives=True), tmp_path)
    with pytest.raises(ValueError, match="length_groups > 1 is not supported by the sentence-transformers route"):
        train_st(st_model(st_folder), table, None, recipe(length_groups=2), tmp_path)

def test_st_run_config_is_its_own_run():
    params = st_compare.comparison_params(config.load_profile("ci"))
    st = st_compare.st_run_config({**params, "seed": 2})
    from hybridnb.studies import runs

    ours = runs.check_run(st_compare.comparison_params({**params, "seed": 2}))
    assert st.text == ours and st.hash != ours.hash and st.run_name != ours.run_name
    assert st.run_name == "ci-st-" + ours.run_name.removeprefix("ci-") and st.run_name.endswith("seed2")
    assert st.to_json()["trainer"] == "sentence-transformers" and st.to_json()["hybridnb_hash"] == ours.hash
    assert st.text.candidate_mode == "sentence"  # the ci profile's sentence+context is replaced for both sides
    assert st_compare.st_run_config({**params, "seed": 0}).hash != st.hash
    # a saved config.json, checked again (tests/test_layout.py does this for committed runs), gives its hash
    again = st_compare.st_run_config({**json.loads(json.dumps(st.to_json())), "profile": "ci"})
    assert (again.hash, again.run_name, again.text.hash) == (st.hash, st.run_name, ours.hash)
    assert [c.run_name for c in st_compare.plan(params)] == [st_compare.st_run_config({**params, "seed": 0}).run_name]
    # the hybridnb side never takes the folder of the ci profile's own (sentence+context) run of that seed
    assert st.text.run_name == "ci-hybrid-fp32-mlqa-r-to-xquad-r-sent32-seed2"
    assert runs.check_run({**config.load_profile("ci"), "seed": 2}).run_name == "ci-hybrid-fp32-mlqa-r-to-xquad-r-seed2"
    cpu = st_compare.comparison_params(config.load_profile("cpu"))  # its own input: the committed runs' names
    assert cpu["run_name"] is None
    # a profile on the length-groups path still compares one padded batch on both sides (the ST route has none)
    fast = st_compare.comparison_params({**config.load_profile("cpu"), "length_groups": 4})
    assert fast["length_groups"] == 1 and runs.check_run(fast).hash == runs.check_run(cpu).hash


# ---- the comparison table -------------------------------------------------------------------------------------


def results(values, n_groups: int = 30, noise: float = 0.02):
    """One synthetic EvalResult per seed: each per-query metric ``value`` plus a per-question difficulty that is
    the same for every seed and both sides (one evaluation set), so each side's macro average is its value plus
    the same constant."""
    jitter = np.random.default_rng(0).normal(0, noise, n_groups)
    return [tiny_models.constant_result(v, ("en", "de"), n_groups, jitter) for v in values]


def test_verdict_flips_when_the_difference_leaves_the_noise():
    hyb = results([0.60, 0.61, 0.62])
    same = st_compare.comparison_frame(results([0.605, 0.615, 0.60]), hyb, n_resamples=200)
    assert list(same["key"]) == list(st_compare.seed_stats.REPORTED)
    assert same["within_noise"].all() and set(same["verdict"]) == {"no difference"}
    assert same.loc["multi map", "diff"] == pytest.approx(np.mean([0.605, 0.615, 0.60]) - 0.61, abs=1e-9)
    assert (same["diff_low"] < 0).all() and (same["diff_high"] > 0).all()
    assert same.loc["multi map", "hybridnb"] == pytest.approx(0.61, abs=0.01)
    better = st_compare.comparison_frame(results([0.70, 0.71, 0.72]), hyb, n_resamples=200)
    assert not better["within_noise"].any()
    assert better.loc["multi map", "verdict"] == "win"
    assert better.set_index("key").loc["rank_distance", "verdict"] == "loss"  # 100x the value: higher, and lower is better
    shown = st_compare.comparison_display(better)
    assert shown.loc["multi map", "verdict"] == "win" and shown.loc["multi map", "ST − hybridnb"].startswith("+0.100")
    assert st_compare.comparison_display(same).loc["mono map", "verdict"] == "within noise"
    one = st_compare.comparison_frame(results([0.70]), results([0.60]), n_resamples=200)
    assert one.loc["multi map", "verdict"] == "win?"  # one seed: the report's mark for unmeasured seed noise


def run_folder(tmp_path, name: str, seconds: list[float], cpu: str, created: str = "2026-12-06T10:00:00+00:00"):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "train_log.jsonl").write_text("".join(json.dumps({"step": i, "step_s": s}) + "\n"
                                                    for i, s in enumerate(seconds)), encoding="utf-8")
    return folder, {"provenance": {"hardware": {"cpu": cpu, "cores": 2, "cuda": None}, "created": created}}


def test_timing_table_medians_ratios_and_machines(tmp_path):
    hyb = [run_folder(tmp_path, "h0", [30.0, 3.0, 3.2, 2.8], "AMD EPYC"),
           run_folder(tmp_path, "h1", [28.0, 3.0, 3.1, 2.9], "AMD EPYC")]
    st = [run_folder(tmp_path, "s0", [40.0, 4.0, 4.0, 4.2], "Intel Xeon"),
          run_folder(tmp_path, "s1", [41.0, 4.1, 3.9, 4.0], "Intel Xeon")]
    same = {"seconds": {"hybridnb": [3.0, 3.0, 3.2], "sentence-transformers": [3.3, 3.3, 3.4]},
            "machine": "AMD EPYC (2 cores)", "rounds": 2, "steps": 4}
    frame = st_compare.timing_frame(hyb, st, same)
    assert list(frame["median s/step"]) == pytest.approx([3.05, 4.05, 3.0, 3.3])
    assert frame.loc[1, "ST / hybridnb"] == pytest.approx(4.05 / 3.05)
    assert "different machines" in frame.loc[1, "note"]
    assert frame.loc[0, "machine"] == "AMD EPYC (2 cores)" and frame.loc[1, "machine"] == "Intel Xeon (2 cores)"
    assert frame.loc[3, "ST / hybridnb"] == pytest.approx(1.1) and frame.loc[3, "machine"] == "AMD EPYC (2 cores)"
    st_same_cpu = [run_folder(tmp_path, "s2", [3.0, 3.0], "AMD EPYC")]
    assert "same CPU model" in st_compare.timing_frame(hyb, st_same_cpu)["note"].iloc[1]


@needs_mirror
def test_compare_end_to_end_with_a_tiny_model(st_folder, tmp_path, monkeypatch):
    """Notebook 08's path on the ci data with a tiny model, 2 seeds of 2 steps: hybridnb's runs and the
    sentence-transformers runs written and then reused, the table over both seeds, the timing table."""
    monkeypatch.setenv("HYBRIDNB_REPORTS", str(tmp_path / "reports"))
    params = {**config.load_profile("ci"), "model": str(st_folder), "max_length": 32, "steps": 2, "val_every": 1,
              "seeds": [0, 1], "n_resamples": 50, "train_max_ids": 80,
              "eval_datasets": {"xquad-r": {"languages": ["en", "de", "zh"], "max_ids": 30}}}
    out = st_compare.compare(params, timing_rounds=1, timing_steps=2)
    frame = out.frames["xquad-r"]
    assert len(frame) == 10 and set(frame["seeds"]) == {"2 / 2"}
    assert set(frame["verdict"]) <= {"no difference", "win", "loss"}  # two seeds: no "?"
    (st0, res0), (st1, _) = out.st
    assert st0.name == "ci-st-" + out.hybridnb[0][0].name.removeprefix("ci-") and st1.name.endswith("seed1")
    saved = json.loads((st0 / "config.json").read_text(encoding="utf-8"))
    assert saved["trainer"] == "sentence-transformers" and saved["hybridnb_hash"] != saved["hash"]
    assert res0["trainer"]["hybridnb_config_hash"] == saved["hybridnb_hash"] and res0["training"]["best_step"] in (1, 2)
    assert res0["datasets"]["xquad-r"]["candidate_mode"] == "sentence" and (st0 / "per_query_xquad-r.npz").is_file()
    assert len(st_compare.step_seconds(st0)) == 2
    timing = out.timing
    assert len(timing) == 4 and all(timing["median s/step"] > 0)
    assert timing.loc[3, "ST / hybridnb"] > 0 and timing.loc[3, "steps timed"] == 1
    assert len(out.verdict_lines()) == 1 and out.verdict_lines()[0].startswith("xquad-r (2 / 2 seeds)")
    again = st_compare.st_runs(params)  # reused by config hash, not retrained
    assert [r["provenance"]["created"] for _, r in again] == [r["provenance"]["created"] for _, r in out.st]


def test_pipeline_checks_the_comparison_before_running_anything(tmp_path, monkeypatch):
    """`make st-compare` with a run config that cannot be made fails in the pipeline's up-front checks."""
    import yaml

    from hybridnb import pipeline

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**config.load_profile("ci"), "profile": "bad", "train_data": "xquad-r"}))
    monkeypatch.setenv("HYBRIDNB_REPORTS", str(tmp_path / "reports"))
    with pytest.raises(ValueError, match="zero-shot"):
        pipeline.run(str(bad), (pipeline.ST_NOTEBOOK,))
    assert not (tmp_path / "reports").exists()
