"""The recipe (hybridnb.studies.recipe): the held-out validation pool, the choice rules, the plan, and a tiny
end-to-end run on the ci profile (two input probes, the grid's hybrid reusing the winning probe by hash)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import needs_mirror
from hybridnb import config, training
from hybridnb.data import lareqa
from hybridnb.data.train_data import collate
from hybridnb.models.encoders import Encoder
from hybridnb.studies import recipe, runs
from tiny_models import save_tiny_bert, synthetic_table


def test_the_validation_pool_keeps_its_questions_paragraphs_and_relevance():
    task = lareqa.load_task("mlqa-r", ["en", "de", "ar"], 60)
    ids = sorted(set(task.questions["id"]))[::4]
    pool = task.restrict_to_ids(ids, "pool")
    assert set(pool.questions["id"]) == set(ids) and pool.name == "pool"
    full_rows = {qid: i for i, qid in enumerate(task.questions["qid"])}
    sentences, pool_sentences = list(task.candidates["sentence"]), list(pool.candidates["sentence"])
    for i, qid in enumerate(pool.questions["qid"]):
        j = full_rows[qid]
        assert sorted(pool_sentences[c] for c in pool.relevant(i)) == sorted(sentences[c] for c in task.relevant(j))
        assert pool_sentences[pool.answer_cids[i]] == sentences[task.answer_cids[j]]
    # every sentence of a kept paragraph, and nothing else
    kept = {p for p, in zip(np.asarray(list(task.candidates["paragraph"]))[task.answer_cids[
        [full_rows[q] for q in pool.questions["qid"]]]])}
    assert set(pool.candidates["paragraph"]) == kept
    assert len(pool.candidates) == sum(p in kept for p in task.candidates["paragraph"])
    assert list(pool.candidates["cid"]) == list(range(len(pool.candidates)))
    with pytest.raises(ValueError, match="none of the 1 ids"):
        task.restrict_to_ids(["no-such-id"])


def _done(score, **params):
    return {"score": score, "run": recipe.RecipeRun("budget", "", 0, params)}


def test_input_and_temperature_take_the_best_held_out_score_and_the_budget_stops_when_it_stops_paying():
    a, b, c = _done(0.50, steps=60), _done(0.52, steps=120), _done(0.52, steps=240)
    assert recipe.choose("input", [a, b, c]) is b  # equal scores: the first listed
    assert recipe.choose("budget", [a, b, c], min_gain=0.005) is b  # 240 adds nothing over 120
    assert recipe.choose("budget", [a, b], min_gain=0.03) is a  # 120 adds 0.02 < 0.03: stays at 60
    assert recipe.choose("budget", [a, _done(0.49, steps=120), _done(0.9, steps=240)], 0.0)["score"] == 0.50
    with pytest.raises(ValueError, match="no finished probe"):
        recipe.choose("temperature", [])


def test_the_cpu_profile_plans_probes_grid_in_both_directions_and_seeded_sweeps():
    params = config.load_profile("cpu")
    planned = recipe.plan(params)
    names = [c.run_name for c in planned]
    assert len(set(names)) == 5 * 2 * 3 + 18 + 5 * 3 + 9  # probes, grid, new sweep points, the masked reverse grid
    assert "cpu-probe-hybrid-sent128-tau0.05-120steps-mlqa-r-to-xquad-r-seed0" in names
    grid = recipe.grid_runs(params)
    assert {(r.group, r.label, r.seed) for r in grid} == {(g, s, k) for g in ("grid", "reverse")
                                                          for s in ("X-X-mono", "X-Y", "hybrid") for k in (0, 1, 2)}
    assert all(r.cfg.train_data == "xquad-r" and r.cfg.eval_data == ["mlqa-r"] for r in grid if r.group == "reverse")
    sweep = recipe.sweep_runs(params)
    assert len(sweep) == 3 * 8 and {r.seed for r in sweep} == {0, 1, 2}
    # alpha 0 / 0.5 / 1 are the grid's cross, hybrid, mono runs (same hash: reused, not retrained)
    grid_hashes = {r.cfg.hash for r in grid}
    assert sum(r.cfg.hash in grid_hashes for r in sweep) == 3 * 3
    from hybridnb.studies import image_text_sweep  # the image-text sweep: its own plan

    mm = [c.run_name for c in image_text_sweep.plan(params)]
    assert sorted(n for n in set(mm) if "hybrid0." in n) == [f"cpu-mm-hybrid{a}-openmoji-cldr-seed{k}"
                                                             for a in ("0.25", "0.75") for k in (0, 1, 2)]
    # the remake at a speed path's setting (recipe --set length_groups=4): the probes stay the committed ones
    # (recipe_length_groups 1: their choices stand), every other run in a folder of its own beside the committed
    # ones, never one of theirs; with the probes on the profile's path (null) they too get folders of their own
    probes = {c.run_name: c.hash for c in planned if "-probe-" in c.run_name}
    fast = {c.run_name: c.hash for c in recipe.plan({**params, "length_groups": 4})}
    assert {n: h for n, h in fast.items() if "-probe-" in n} == probes
    others = set(fast) - set(probes)
    assert len(others) == len(set(names)) - len(probes) and not others & set(names)
    assert all("-lg4-" in n for n in others)
    fast_probes = {c.run_name for c in recipe.plan({**params, "length_groups": 4, "recipe_length_groups": None})}
    assert len(fast_probes) == len(set(names)) and not fast_probes & set(names)


@pytest.mark.parametrize("bad, message", [
    ({"recipe_inputs": [["sentence"]]}, "recipe_inputs entries"),
    ({"recipe_inputs": [["sentence", 64], ["sentence", 64]]}, "duplicates"),
    ({"recipe_inputs": [["words", 64]]}, "candidate"),
    ({"recipe_steps": [60, -1]}, "recipe_steps"),
    ({"recipe_temperatures": [0.01, 0.01]}, "recipe_temperatures"),
    ({"seeds": [0, 0]}, "seeds"),
    ({"recipe_length_groups": 0}, "recipe_length_groups"),
])
def test_bad_recipe_settings_fail_before_any_work(bad, message):
    with pytest.raises(ValueError, match=message):
        recipe.plan({**config.load_profile("cpu"), **bad})


def test_a_tiny_recipe_end_to_end(tmp_path, monkeypatch):
    """Two input probes (4 steps each), the winner chosen on the held-out pool, the grid's hybrid seed 0 = the
    winning probe (found by hash in the probe's folder), then the same answer without training."""
    monkeypatch.setenv("HYBRIDNB_REPORTS", str(tmp_path / "reports"))
    params = {**config.load_profile("ci"), "recipe_inputs": [["sentence", 32], ["sentence+context", 32]],
              "recipe_temperatures": [0.05], "recipe_steps": [4], "steps": 4, "seeds": [0],
              "strategies": ["hybrid"], "recipe_reverse": False, "alphas": [], "mixtures": [],
              "n_resamples": 20, "eval_datasets": {"xquad-r": {"languages": ["en", "de"], "max_ids": 30}},
              "train_languages": ["en", "de"], "train_max_ids": 80, "val_fraction": 0.25}
    done = recipe.collect(params, show_progress=False)
    probes = done["probes"]["input"]
    assert [p["run"].label for p in probes] == ["sentence@32", "sentence+context@32"]
    for p in probes:
        pool = p["results"][runs.VALIDATION_POOL]
        assert pool["n_queries"] > 0 and 0 <= pool["mono"]["map"]["value"] <= 1
        assert p["score"] == pytest.approx(recipe.held_out_score(p["results"]))
        assert not (p["dir"] / f"per_query_{runs.VALIDATION_POOL}.npz").exists()  # a test set's files only
    winner = max(probes, key=lambda p: p["score"])
    assert done["chosen"] == {"candidate_mode": winner["run"].params["candidate_mode"], "max_length": 32,
                              "temperature": 0.05, "steps": 4}
    (hybrid,) = done["grid"]
    assert hybrid["dir"] == winner["dir"] and hybrid["results"] == winner["results"]
    again = recipe.collect(params, train_missing=False, show_progress=False)
    assert again["chosen"] == done["chosen"] and again["grid"][0]["dir"] == winner["dir"]
    # with nothing trained, nothing is chosen on part of the probes
    monkeypatch.setenv("HYBRIDNB_REPORTS", str(tmp_path / "empty"))
    assert recipe.collect(params, train_missing=False, show_progress=False)["chosen"] == {}


def test_validation_scores_are_temperature_free_and_match_a_hand_computation(tmp_path, one_thread):
    table = synthetic_table()
    enc = Encoder.from_pretrained(save_tiny_bert(tmp_path / "bert", dropout=0.0), max_length=32)
    cfg = training.TextTraining(batch_size=8, val_batches=2, train_dtype="float32", n_hard_negatives=1)
    batches = training.trainer.fixed_validation_batches(cfg, table)
    scores = training.trainer.validation_scores(enc, table, batches, cfg)
    hotter = training.trainer.validation_scores(enc, table, batches, cfg.replace(temperature=0.5))
    assert hotter["loss"] != pytest.approx(scores["loss"])
    assert (hotter["top1"], hotter["mrr"]) == pytest.approx((scores["top1"], scores["mrr"]))
    top1, rr, n = 0, 0.0, 0
    with torch.no_grad():
        for pairs in batches:
            q_txt, p_txt, n_txt = collate(table, pairs, 1)
            q = enc(enc.tokenize(q_txt, "query")).numpy()
            c = torch.cat([enc(enc.tokenize(p_txt, "passage")), enc(enc.tokenize(n_txt, "passage"))]).numpy()
            s = q @ c.T
            for i in range(len(q)):
                rank = 1 + int((s[i] > s[i, i]).sum())
                top1 += rank == 1
                rr += 1 / rank
                n += 1
    assert scores["top1"] == pytest.approx(top1 / n) and scores["mrr"] == pytest.approx(rr / n)
    assert 0 < scores["top1"] <= scores["mrr"] <= 1


@needs_mirror
def test_a_seed_changes_the_batches_but_not_the_data_or_the_validation(one_thread):
    params = config.load_profile("ci")
    cfg0, cfg1 = (runs.check_run({**params, "seed": s}) for s in (0, 1))
    d0, d1 = runs.prepare_data(cfg0), runs.prepare_data(cfg1)
    assert d0.val.ids == d1.val.ids and d0.train.ids == d1.train.ids      # the same held-out items
    assert d0.train.hard_negatives == d1.train.hard_negatives              # the same hard negatives
    v0, v1 = (training.trainer.fixed_validation_batches(c.training(), d.val) for c, d in ((cfg0, d0), (cfg1, d1)))
    assert all(np.array_equal(a, b) for a, b in zip(v0, v1))               # the same validation batches
    s0, s1 = (training.check_config(c.training(), d.train) for c, d in ((cfg0, d0), (cfg1, d1)))
    assert not np.array_equal(s0.next_batch().pairs, s1.next_batch().pairs)  # other training batches


@needs_mirror
def test_the_zero_shot_row_is_notebook_02s_result_and_never_replaces_it(monkeypatch, tmp_path):
    """recipe.zero_shot evaluates every dataset of the profile, as notebook 02 does, so it finds 02's result
    (and a result it writes there is 02's): a one-dataset result once replaced 02's and made it recompute."""
    from hybridnb.studies import backbone_study, zero_shot as zs

    params = config.load_profile("ci")
    seen = {}

    def fake(backbone, tasks, p, show_progress=True, out=None):
        seen["datasets"], seen["out"] = sorted(tasks), out
        return {"datasets": {}}

    monkeypatch.setattr(backbone_study, "zero_shot_results", fake)
    monkeypatch.setattr(zs, "find", lambda *a, **k: None)
    recipe.zero_shot({**params, "profile": "zs-test"}, params["candidate_mode"])
    assert seen["datasets"] == sorted(params["eval_datasets"])
    assert seen["out"] == zs.result_dir("zs-test", params["model"])
    recipe.zero_shot({**params, "profile": "zs-test"}, "sentence")
    assert seen["out"].name.endswith("--sentence")


def test_the_masked_stage_plans_the_reverse_grid_with_the_mask_on():
    params = config.load_profile("cpu")
    reverse = [r for r in recipe.grid_runs(params) if r.group == "reverse"]
    masked = recipe.masked_runs(params)
    assert [(r.label, r.seed) for r in masked] == [(r.label, r.seed) for r in reverse] and len(masked) == 9
    for m, r in zip(masked, reverse):
        assert m.group == "masked" and m.cfg.mask_false_negatives and not r.cfg.mask_false_negatives
        assert m.cfg.run_name == r.cfg.run_name.replace("-xquad-r-to-mlqa-r", "-fnmask-xquad-r-to-mlqa-r")
        assert m.cfg.hash != r.cfg.hash
    planned = {c.run_name for c in recipe.plan(params)}
    assert {m.cfg.run_name for m in masked} <= planned
    assert recipe.masked_runs({**params, "recipe_reverse": False}) == []
