"""hybridnb.studies.compare: the system labels, the verdict wording, the training-curve figures."""

import pandas as pd

from hybridnb.studies import compare


def test_system_labels_are_the_papers():
    assert compare.system_label("cross") == "X-Y" and compare.system_label("mono") == "X-X-mono"


def test_p_at_the_floor_and_every_baseline_in_every_column():
    assert compare.p_text(2 / 1001, 1000) == "p≤2/1001" and compare.p_text(0.0312, 1000) == "p=0.031"
    assert compare.p_text(0.002, None) == "p=0.002"
    sig = pd.DataFrame([
        {"baseline": "X-Y", "column": "mono map", "diff": 0.01, "low": 0.002, "high": 0.02, "p_value": 0.01},
        {"baseline": "X-Y", "column": "multi map", "diff": -0.02, "low": -0.03, "high": -0.01, "p_value": 0.002},
        {"baseline": "X-Y", "column": "rank distance ↓", "diff": 19.0, "low": 9.0, "high": 28.0, "p_value": 0.002},
        {"baseline": "X-X-mono", "column": "rank distance ↓", "diff": -30.0, "low": -35.0, "high": -25.0, "p_value": 0.002},
        {"baseline": "X-X-mono", "column": "mono map", "diff": 0.001, "low": -0.001, "high": 0.003, "p_value": 0.2},
    ])
    assert compare.baseline_verdicts(sig) == [
        "hybrid vs X-Y: wins on mono map (+0.010); loses on multi map (-0.020), rank distance ↓ (+19.0).",
        "hybrid vs X-X-mono: wins on rank distance ↓ (-30.0); no difference on mono map (+0.001).",
    ]
    seeded = sig.assign(verdict=["win", "loss?", "loss?", "win?", "no difference?"],
                        seed_noise_measured=[True, False, False, False, False])  # image-text: its own verdicts
    assert compare.baseline_verdicts(seeded)[1] == ("hybrid vs X-X-mono: wins on rank distance ↓ (-30.0); no difference "
                                                    "on mono map (+0.001) (one seed: seed noise not measured).")


def test_training_curves_label_the_validation_dots_and_use_whole_steps(tmp_path):
    import json

    import matplotlib

    matplotlib.use("Agg")
    systems = {}
    for name in ("X-X-mono", "hybrid"):
        d = tmp_path / name
        d.mkdir()
        rows = [{"step": s, "loss": 2.0 - 0.1 * s, **({"val_loss": 1.5} if s % 3 == 2 else {})} for s in range(6)]
        (d / "train_log.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        systems[name] = {"dir": d}
    fig = compare.plot_training_curves(systems, "curves")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "hybrid: validation" in labels and "X-X-mono: train (5-step mean)" in labels
    ticks = fig.axes[0].get_xticks()
    assert all(float(t).is_integer() for t in ticks)


def test_a_runs_loss_curve_labels_every_line_and_notes_mixed_batch_kinds():
    import matplotlib

    from hybridnb import reporting

    matplotlib.use("Agg")
    history = [{"step": s, "loss": 2.0 - 0.05 * s, "lr": 1e-5, "kind": "mono" if s % 2 else "cross",
                **({"val_loss": 1.5} if s % 4 == 3 else {})} for s in range(12)]
    fig = reporting.plot_training_curves(history, "run", window=5)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["train loss", "train loss (5-step mean)", "validation loss", "learning rate (right axis)"]
    assert all(float(t).is_integer() for t in ax.get_xticks())
    assert any("mixes batch kinds" in t.get_text() for t in ax.texts)
    single = reporting.plot_training_curves([{**r, "kind": "mono"} for r in history], "mono run", window=5)
    assert not any("mixes batch kinds" in t.get_text() for t in single.axes[0].texts)
