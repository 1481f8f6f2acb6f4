"""Tests for hybridnb.studies.batch_audit: a run's batches replayed to count in-batch false negatives."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd

from hybridnb import training
from hybridnb.data import train_data
from hybridnb.studies import batch_audit


def _table(shared: bool) -> train_data.ParallelTable:
    """8 items in en and de; with `shared`, items 2k and 2k+1 answer with the same English text."""
    ids = [f"i{k}" for k in range(8)]
    en = [f"answer {k // 2 if shared else k}" for k in range(8)]
    return train_data.ParallelTable(ids, ["en", "de"], {"en": [f"q{k}" for k in range(8)], "de": [f"f{k}" for k in range(8)]},
                                    {"en": en, "de": [f"antwort {k}" for k in range(8)]},
                                    {"en": [[] for _ in ids], "de": [[] for _ in ids]})


def _cfg(strategy: str, steps: int = 6):
    train_cfg = training.TextTraining(strategy=strategy, batch_size=8, n_hard_negatives=0, seed=3)
    return SimpleNamespace(training=lambda: train_cfg, steps=steps, n_hard_negatives=0, batch_size=8)


def test_replay_counts_what_the_batches_hold():
    data = SimpleNamespace(train=_table(shared=True))
    mono = batch_audit.replay(_cfg("mono"), data)
    # every batch holds all 8 items in one language: an English batch has 8 false negatives (4 shared pairs, both ways),
    # a German one none; the replay must agree with collating the same sampler's batches by hand
    sampler = training.check_config(_cfg("mono").training(), data.train, world_size=1, rank=0)
    english = [all(data.train.languages[ql] == "en" for _, ql, _ in b.pairs.tolist()) for b in sampler.take(6)]
    assert mono == {"batches": 6, "batches_with_false_negatives": sum(english),
                    "false_negatives": 8 * sum(english), "pairs": 48}
    assert 0 < sum(english) < 6  # the seed draws both languages, so the test can tell them apart
    clean = batch_audit.replay(_cfg("mono"), SimpleNamespace(train=_table(shared=False)))
    assert clean["false_negatives"] == 0 and clean["batches_with_false_negatives"] == 0


def test_summary_pools_seeds():
    frame = pd.DataFrame([
        {"direction": "a → b", "system": "hybrid", "seed": 0, "batches": 10, "batches_with_false_negatives": 2,
         "false_negatives": 6, "pairs": 320},
        {"direction": "a → b", "system": "hybrid", "seed": 1, "batches": 10, "batches_with_false_negatives": 4,
         "false_negatives": 10, "pairs": 320},
    ])
    row = batch_audit.summary(frame).iloc[0]
    assert row["seeds"] == 2 and row["batches"] == 20
    assert np.isclose(row["false negatives per batch"], 0.8) and np.isclose(row["batches with one or more"], 0.3)
    assert np.isclose(row["false negatives per training pair"], 16 / 640)


def test_saved_audit_replays_only_runs_it_has_not_counted(monkeypatch, tmp_path):
    table = _table(shared=True)
    cfgs = [SimpleNamespace(**vars(_cfg("mono", steps=3)), hash=f"h{seed}", seed=seed, train_data="xquad-r",
                            eval_data=["mlqa-r"], candidate_mode="sentence", val_fraction=0.1) for seed in (0, 1)]
    planned = [SimpleNamespace(cfg=c, label="X-X-mono") for c in cfgs]
    prepared = []
    monkeypatch.setattr(batch_audit.recipe, "grid_runs", lambda params: planned)
    monkeypatch.setattr(batch_audit.runs, "prepare_data", lambda cfg: prepared.append(cfg) or SimpleNamespace(train=table))
    monkeypatch.setattr(batch_audit, "reports_root", lambda: tmp_path)
    params = {"profile": "ci"}
    first = batch_audit.saved_audit(params)
    assert list(first["hash"]) == ["h0", "h1"] and len(prepared) == 1  # the data once per direction and input
    assert (tmp_path / "ci" / "batch_audit.json").is_file()
    again = batch_audit.saved_audit(params)
    assert len(prepared) == 1  # nothing replayed: both runs were counted
    pd.testing.assert_frame_equal(first, again)
    planned.append(SimpleNamespace(cfg=SimpleNamespace(**{**vars(cfgs[0]), "hash": "h2", "seed": 2}), label="X-X-mono"))
    assert list(batch_audit.saved_audit(params)["hash"]) == ["h0", "h1", "h2"] and len(prepared) == 2


def _frame(mono_fn: int, hybrid_fn: int, cross_fn: int, direction: str = "xquad-r → mlqa-r") -> pd.DataFrame:
    return pd.DataFrame([{"direction": direction, "system": system, "seed": 0, "batches": 10,
                          "batches_with_false_negatives": min(n, 10), "false_negatives": n, "pairs": 320}
                         for system, n in (("X-X-mono", mono_fn), ("X-Y", cross_fn), ("hybrid", hybrid_fn))])


def test_report_lines_say_what_the_counts_say():
    heavy = pd.concat([_frame(21, 12, 2), _frame(2, 1, 0, "mlqa-r → xquad-r")])
    assert batch_audit.confounded(heavy) == ["xquad-r → mlqa-r"]  # 2.1 per batch >= 0.5; 0.2 is not
    text = "\n".join(batch_audit.report_lines(heavy, 32, []))
    assert "- xquad-r → mlqa-r: hybrid's batches held 1.20 false negatives per batch, X-Y's 0.20, X-X-mono's 2.10." in text
    assert "- mlqa-r → xquad-r: hybrid's batches held 0.10" in text
    assert "(xquad-r → mlqa-r)" in text and "no masked run has been made yet" in text
    text = "\n".join(batch_audit.report_lines(heavy, 32, ["cpu-hybrid-fnmask-x", "cpu-mono-fnmask-x"]))
    assert "2 masked runs (cpu-hybrid-fnmask-x, ...) have their own section above" in text
    assert "no masked run" not in text
    clean = _frame(2, 1, 0)
    assert batch_audit.confounded(clean) == []
    assert "Where batches hold" not in "\n".join(batch_audit.report_lines(clean, 32, []))
