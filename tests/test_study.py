"""Tests of the study (hybridnb.studies.study, hybridnb.studies.study_report): its plan, the temperature choice, what a seed
controls, the temperature-free validation scores, and the ci profile's study end to end (2 seeds, tiny)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from conftest import needs_mirror
from hybridnb import config, training
from hybridnb.studies import runs, study
from hybridnb.models.encoders import Encoder
from hybridnb.data.train_data import collate
from tiny_models import save_tiny_bert, synthetic_table


def test_the_study_profile_plans_probes_then_every_strategy_and_seed():
    params = config.load_profile("study")
    planned = study.check_study(params)
    probes = study.probe_runs(params)
    assert [r.params["temperature"] for r in probes] == [0.01, 0.05]
    assert {r.system for r in probes} == {"hybrid"}
    grid = study.grid_runs(params, 0.01)
    assert [(r.system, r.seed) for r in grid[:3]] == [("X-X-mono", 0), ("X-Y", 0), ("hybrid", 0)]  # seed-major
    assert len(grid) == 9 and {r.seed for r in grid} == {0, 1, 2}
    # the chosen probe is the grid's hybrid at the first seed: same config hash, reused, not trained twice
    assert probes[0].cfg.hash == grid[2].cfg.hash
    names = {r.cfg.run_name for r in planned}
    assert "study-hybrid-tau0.01-mlqa-r-to-xquad-r-seed2" in names and "study-mono-mlqa-r-to-xquad-r-seed0" in names
    reverse = study.reverse_runs(params, 0.01)
    assert {(r.params["train_data"], r.params["eval_data"]) for r in reverse} == {("xquad-r", "mlqa-r")}


def test_run_names_carry_a_non_default_temperature_and_the_cpu_names_stay():
    params = config.load_profile("cpu")
    assert runs.check_run({**params, "strategy": "hybrid"}).run_name == "cpu-hybrid-mlqa-r-to-xquad-r-seed0"
    assert runs.check_run({**params, "temperature": 0.01}).run_name == "cpu-hybrid-tau0.01-mlqa-r-to-xquad-r-seed0"


@pytest.mark.parametrize("bad, message", [({"seeds": [0, 0]}, "seeds"), ({"seeds": [-1]}, "seeds"),
                                          ({"study_temperatures": [0]}, "study_temperatures"),
                                          ({"strategies": ["mono", "bogus"]}, "bogus")])
def test_bad_study_settings_fail_before_any_work(bad, message):
    with pytest.raises(ValueError, match=message):
        study.check_study({**config.load_profile("ci"), **bad})


def _probe(tmp_path, t, mrr_at_best, best=4, tag=""):
    folder = tmp_path / f"t{t}{tag}"
    folder.mkdir()
    log = [{"step": 1, "val_loss": 1.0, "val_mrr": 0.1}, {"step": best - 1, "val_loss": 0.5, "val_mrr": mrr_at_best}]
    (folder / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    return {"results": {"training": {"best_step": best}}, "dir": folder}


def test_choose_temperature_by_validation_mrr_at_the_best_step(tmp_path):
    probes = {0.01: _probe(tmp_path, 0.01, 0.91), 0.05: _probe(tmp_path, 0.05, 0.93)}
    assert study.choose_temperature(probes) == (0.05, {0.01: 0.91, 0.05: 0.93})
    tied = {0.05: _probe(tmp_path, 0.05, 0.9, tag="tie"), 0.01: _probe(tmp_path, 0.01, 0.9, tag="tie")}
    assert study.choose_temperature(tied)[0] == 0.01  # a tie goes to the lower temperature
    old = tmp_path / "old"
    old.mkdir()
    (old / "train_log.jsonl").write_text(json.dumps({"step": 3, "val_loss": 0.5}) + "\n")
    with pytest.raises(ValueError, match="no validation MRR"):
        study.choose_temperature({0.05: {"results": {"training": {"best_step": 4}}, "dir": old}})


def test_validation_scores_are_temperature_free_and_match_a_hand_computation(tmp_path, one_thread):
    table = synthetic_table()
    enc = Encoder.from_pretrained(save_tiny_bert(tmp_path / "bert", dropout=0.0), max_length=32)
    cfg = training.TrainConfig(batch_size=8, val_batches=2, train_dtype="float32", n_hard_negatives=1)
    batches = training.trainer.fixed_validation_batches(cfg, table)
    scores = training.trainer.validation_scores(enc, table, batches, cfg)
    hotter = training.trainer.validation_scores(enc, table, batches, training.TrainConfig(**{**cfg.__dict__, "temperature": 0.5}))
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
    v0, v1 = (training.trainer.fixed_validation_batches(runs.train_config(c), d.val) for c, d in ((cfg0, d0), (cfg1, d1)))
    assert all(np.array_equal(a, b) for a, b in zip(v0, v1))               # the same validation batches
    s0, s1 = (training.check_config(runs.train_config(c), d.train) for c, d in ((cfg0, d0), (cfg1, d1)))
    assert not np.array_equal(s0.next_batch().pairs, s1.next_batch().pairs)  # other training batches


@needs_mirror
def test_the_ci_study_end_to_end():  # every core: E5 training steps, not tiny tensors
    """2 seeds x 3 strategies on the ci profile (the seed-0 runs are the pipeline test's when it ran first),
    then STUDY.md: every baseline in every column, the paper beside it, the figures."""
    from hybridnb.studies import study_report
    from hybridnb.paths import reports_root

    params = config.load_profile("ci")
    collected = study.collect(params, show_progress=False)
    assert collected["temperature"] == 0.05
    assert {k: [r["run"].seed for r in v] for k, v in collected["systems"].items()} == \
        {"X-X-mono": [0, 1], "X-Y": [0, 1], "hybrid": [0, 1]}
    zs = study.zero_shot(params, params["candidate_mode"], show_progress=False)
    report = study_report.build(params, collected, zs)
    sec = report["sections"]["xquad-r"]
    assert sorted(sec["summaries"]) == ["X-X-mono", "X-Y", "hybrid", "zero-shot"]
    v = sec["verdicts"]
    assert len(v) == 30 and set(v.baseline) == {"X-X-mono", "X-Y", "zero-shot"}
    assert set(v.verdict) <= {"win", "loss", "no difference"}  # two seeds: seed noise measured everywhere
    for name, summary in sec["summaries"].items():
        e = summary["mono_ap"]
        assert e["low"] <= e["mean"] <= e["high"] and len(e["per_seed"]) == (1 if name == "zero-shot" else 2)
    assert not sec["paper"].empty and {"vs XLM-R", "vs LaBSE"} <= set(sec["paper"].columns)
    text = (reports_root() / "ci" / "STUDY.md").read_text(encoding="utf-8")
    for needle in ("Hybrid against every baseline", "Beside the paper", "On xquad-r:", "## Budget",
                   "study_points_xquad-r.png"):
        assert needle in text, needle
    for rel in report["figures"]:
        assert (reports_root() / "ci" / rel).stat().st_size > 10_000
    assert not math.isnan(sec["verdicts"]["diff"].iloc[0])


@needs_mirror
def test_the_zero_shot_row_is_notebook_02s_result_and_never_replaces_it(monkeypatch, tmp_path):
    """study.zero_shot evaluates every dataset of the profile, as notebook 02 does, so it finds 02's result
    (and a result it writes there is 02's): a one-dataset result once replaced 02's and made it recompute."""
    from hybridnb.studies import backbone_study, zero_shot as zs

    params = config.load_profile("ci")
    seen = {}

    def fake(backbone, tasks, p, show_progress=True, out=None):
        seen["datasets"], seen["out"] = sorted(tasks), out
        return {"datasets": {}}

    monkeypatch.setattr(backbone_study, "zero_shot_results", fake)
    monkeypatch.setattr(zs, "find", lambda *a, **k: None)
    study.zero_shot({**params, "profile": "zs-test"}, params["candidate_mode"])
    assert seen["datasets"] == sorted(params["eval_datasets"])
    assert seen["out"] == zs.result_dir("zs-test", params["model"])
    study.zero_shot({**params, "profile": "zs-test"}, "sentence")
    assert seen["out"].name.endswith("--sentence")


def test_the_summary_sentence_names_wins_losses_and_unmeasured_seed_noise():
    import pandas as pd

    from hybridnb.studies import study_report

    v = pd.DataFrame([{"baseline": "X-Y", "column": "mono map", "verdict": "win"},
                      {"baseline": "X-Y", "column": "multi map", "verdict": "loss"},
                      {"baseline": "X-Y", "column": "cross map", "verdict": "no difference"},
                      {"baseline": "zero-shot", "column": "mono map", "verdict": "win?"}])
    text = study_report.summary_sentence(v, "xquad-r")
    tie = study_report.summary_sentence(v[v.verdict == "no difference"], "mlqa-r")
    assert tie == "On mlqa-r: Against X-Y, no difference beyond noise in any of the 1 columns."
    assert text == ("On xquad-r: Against X-Y, hybrid is better on mono map; worse on multi map; no different beyond "
                    "noise on the other 1. Against zero-shot, hybrid is better on mono map (one seed: training noise "
                    "not measured, so these are not yet claims).")


def _fake_run(tmp_path, group, system, seed, values: dict[str, float], jitter_seed: int):
    """A finished study run as study.collect returns it, with per-query files of known values per dataset."""
    from types import SimpleNamespace

    from tiny_models import constant_result

    folder = tmp_path / "runs" / f"{group}-{system}-{seed}"
    rng = np.random.default_rng(jitter_seed)
    for dataset, value in values.items():
        constant_result(value, jitter=rng.normal(0, 0.01, 20)).save(folder / f"per_query_{dataset}.npz")
    run = SimpleNamespace(group=group, system=system, seed=seed, params={"temperature": 0.01},
                          cfg=SimpleNamespace(run_name=folder.name))
    results = {"datasets": dict.fromkeys(values), "training": {"train_items": 100}, "model": {"candidate_mode": "x"},
               "timings": {"wall_s": 60.0, "train_s": 30.0}}
    return {"run": run, "results": results, "dir": folder}


def test_the_report_has_the_reverse_section_and_the_other_mode_row_per_dataset(tmp_path, monkeypatch):
    """STUDY.md from hand-made runs: the reverse direction (one seed: verdicts marked ?) gets its own section,
    and the other candidate mode's zero-shot row appears once per dataset with that dataset's numbers."""
    from hybridnb.studies import study_report

    monkeypatch.setenv("HYBRIDNB_REPORTS", str(tmp_path / "reports"))
    params = {**config.load_profile("ci"), "profile": "fake", "seeds": [0, 1], "train_data": "mlqa-r",
              "eval_data": "xquad-r"}
    level = {"X-X-mono": 0.60, "X-Y": 0.62, "hybrid": 0.70}
    grid = [_fake_run(tmp_path, "grid", name, seed, {"xquad-r": v}, 10 * seed + i)
            for i, (name, v) in enumerate(level.items()) for seed in (0, 1)]
    reverse = [_fake_run(tmp_path, "reverse", name, 0, {"mlqa-r": v - 0.1}, 50 + i)
               for i, (name, v) in enumerate(level.items())]
    collected = {"temperature": 0.01, "val_mrr": {}, "probes": [], "grid": grid, "reverse": reverse,
                 "systems": {name: [r for r in grid if r["run"].system == name] for name in level}}
    zero_shot = _fake_run(tmp_path, "zs", "zero-shot", 0, {"xquad-r": 0.50, "mlqa-r": 0.45}, 99)
    other = _fake_run(tmp_path, "zs", "zero-shot-sentence", 0, {"xquad-r": 0.30, "mlqa-r": 0.35}, 98)
    other["results"]["model"]["candidate_mode"] = "sentence"

    report = study_report.build(params, collected, zero_shot, other)
    forward, back = report["sections"]["xquad-r"], report["sections"]["mlqa-r"]
    assert sorted(back["summaries"]) == ["X-X-mono", "X-Y", "hybrid", "zero-shot"]
    assert all(len(s["mono_ap"]["per_seed"]) == 1 for s in back["summaries"].values())
    assert back["verdicts"].verdict.str.endswith("?").all()            # one seed: seed noise unmeasured
    assert not forward["verdicts"].verdict.str.endswith("?").any()     # two seeds
    vs_mono = back["verdicts"].query("baseline == 'X-X-mono'").set_index("column").verdict
    assert set(vs_mono.drop("rank distance ↓")) == {"win?"}  # 0.60 vs 0.50 in every metric, jitter 0.01
    assert vs_mono["rank distance ↓"] == "loss?"              # rank distance is 100x the value: higher is worse
    for sec, value in ((forward, 0.30), (back, 0.35)):  # each section shows its own dataset's row
        row = study_report.seed_table(sec["zero_shot_other_summary"])
        assert list(row.index) == ["zero-shot, sentence"]
        assert float(row["mono map"].iloc[0].split()[0]) == pytest.approx(value, abs=0.01)
        assert list(row.columns) == list(sec["seed_table"].columns)
    text = report["text"]
    assert text.count("| zero-shot, sentence |") == 2
    assert "## mlqa-r" in text and "Reverse direction: trained on xquad-r, evaluated zero-shot on mlqa-r, seed 0" in text
    assert text.index("## xquad-r") < text.index("## mlqa-r") < text.index("## Budget")
    assert "study_points_mlqa-r.png" in text
    assert text.index("## The evaluation input") < text.index("## xquad-r")
    assert ("Zero-shot on xquad-r, sentence+context vs sentence: mono map 0.50" in text
            and "not measured yet (`python benchmarks/bench_candidate_mode.py`)" in text)
