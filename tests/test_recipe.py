"""The recipe (hybridnb.studies.recipe): the held-out validation pool, the choice rules, the plan, and a tiny
end-to-end run on the ci profile (two input probes, the grid's hybrid reusing the winning probe by hash)."""

from __future__ import annotations

import numpy as np
import pytest

from hybridnb import config
from hybridnb.data import lareqa
from hybridnb.studies import recipe, runs


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
    assert len(set(names)) == 5 * 2 * 3 + 18 + 5 * 3 + 1 + 2 * 3  # probes, grid, new sweep points, image-text
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
    mm = [c.run_name for c in planned if "-mm-hybrid0.25-" in c.run_name]
    assert len(mm) == 3


@pytest.mark.parametrize("bad, message", [
    ({"recipe_inputs": [["sentence"]]}, "recipe_inputs entries"),
    ({"recipe_inputs": [["sentence", 64], ["sentence", 64]]}, "duplicates"),
    ({"recipe_inputs": [["words", 64]]}, "candidate"),
    ({"recipe_steps": [60, -1]}, "recipe_steps"),
    ({"recipe_temperatures": [0.01, 0.01]}, "recipe_temperatures"),
    ({"seeds": [0, 0]}, "seeds"),
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
              "strategies": ["hybrid"], "recipe_reverse": False, "alphas": [], "mixtures": [], "mm_alphas": [],
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
    again = recipe.collect(params, train=False, show_progress=False)
    assert again["chosen"] == done["chosen"] and again["grid"][0]["dir"] == winner["dir"]
    # with nothing trained, nothing is chosen on part of the probes
    monkeypatch.setenv("HYBRIDNB_REPORTS", str(tmp_path / "empty"))
    assert recipe.collect(params, train=False, show_progress=False)["chosen"] == {}
