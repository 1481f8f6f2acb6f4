"""Tests for hybridnb.image_text.trainer (the loop) and hybridnb.image_text.runs (one run end to end, the
zero-shot baseline, reuse by hash, the atomic writer, the comparison), on a tiny random BERT and a synthetic
table: fast and offline."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from tiny_models import WORDS, save_tiny_bert  # noqa: E402

from hybridnb import config
from hybridnb.studies import image_text_compare as mmc
from hybridnb.image_text import runs as mm
from hybridnb.image_text import trainer as itt
from hybridnb.studies import compare, runs  # noqa: E402
from hybridnb.models.encoders import Encoder  # noqa: E402
from hybridnb.image_text.model import batch_loss, collate_image_text, image_text_loss  # noqa: E402
from hybridnb.image_text.caption_table import ImageTextTable  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
LANGS = ["en", "de", "fr"]


def synthetic(n=24, languages=LANGS, size=16, seed=0, missing=()):
    """Item i: a random 4 x 4 colour pattern (large blocks: a CNN with global pooling tells them apart); its
    caption in language j is two vocabulary words (unique per language)."""
    blocks = np.random.default_rng(seed).integers(0, 256, (n, 4, 4, 3), dtype=np.uint8)
    images = blocks.repeat(size // 4, axis=1).repeat(size // 4, axis=2)
    word = lambda k: WORDS[k % len(WORDS)]  # noqa: E731
    captions = {g: [None if (g, i) in missing else f"{word(i + 3 * j)} {word(7 * i + j)}" for i in range(n)]
                for j, g in enumerate(languages)}
    return ImageTextTable([f"e{seed}-{i}" for i in range(n)], list(languages), captions, images=images, name="toy")


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return str(save_tiny_bert(tmp_path_factory.mktemp("bert") / "bert", dropout=0.1))


def cfg_for(**kw):
    base = dict(strategy="hybrid", steps=40, batch_size=6, lr=2e-3, image_lr=3e-3, warmup_ratio=0.0, image_size=16,
                dim=16, max_length=8, image_tower_args={"width": 8, "depth": 2}, val_every=10, val_batches=2,
                temperature=0.1)
    return itt.ImageTextTraining(**{**base, **kw})


def model_for(cfg, bert):
    return itt.build_model(cfg, Encoder.from_pretrained(bert, max_length=cfg.max_length))


# ---- the training loop ---------------------------------------------------------------------------


@pytest.mark.parametrize("change, message", [
    ({"strategy": "bilingual"}, "unknown strategy"),
    ({"alpha": 1.5}, "alpha"),
    ({"batch_size": 25}, "exceeds the 24 items"),
    ({"train_languages": ["en", "xx"]}, r"\[.xx.\] are not in the training table"),
    ({"steps": 0}, "steps must be an int >= 1, got 0"),
    ({"image_lr": 0.0}, "image_lr"),
    ({"image_tower": "resnet"}, "image_tower must be one of .cnn., .* got .resnet."),
    ({"train_dtype": "int8"}, "train_dtype"),
    ({"image_size": None}, "image_size must be an int >= 8 for the cnn image tower, got None"),
])
def test_bad_settings_raise_before_any_work(change, message, tmp_path, monkeypatch):
    def fail(*a, **k):
        raise AssertionError("work started")

    monkeypatch.setattr(itt, "collate_image_text", fail)
    monkeypatch.setattr(itt.training.trainer, "build_optimizer", fail)
    with pytest.raises(ValueError, match=message):
        itt.train_image_text(None, synthetic(), synthetic(12, seed=1), cfg_for(**change), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_mono_batches_of_a_language_larger_than_its_items_are_refused():
    table = synthetic(missing={("fr", i) for i in range(20)})  # only 4 French captions
    with pytest.raises(ValueError, match="mono batches need"):
        itt.check_config(cfg_for(strategy="mono", batch_size=6), table)


def test_training_lowers_the_loss_and_is_deterministic(bert, tmp_path):
    train, val = synthetic(), synthetic(12, seed=1)
    cfg = cfg_for()
    model = model_for(cfg, bert)
    batches = itt.training.trainer.fixed_validation_batches(cfg, train)
    before = itt.validation_loss(model, train, batches, cfg)
    result = itt.train_image_text(model, train, val, cfg, tmp_path / "a", show_progress=False)
    after = itt.validation_loss(model, train, batches, cfg)
    assert after < 0.85 * before, (before, after)
    assert len(result.history) == cfg.steps and result.best_step in (10, 20, 30, 40)
    assert result.best_val_loss == min(r["val_loss"] for r in result.history if "val_loss" in r)
    log = [json.loads(line) for line in (tmp_path / "a" / itt.LOG).read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(cfg.steps))
    assert {"loss", "lr", "image_lr", "grad_norm", "kind", "pairs_per_s", "text_term"} <= set(log[0])
    assert log[-1]["lr"] < log[1]["lr"] and log[1]["image_lr"] == pytest.approx(1.5 * log[1]["lr"])  # two lrs
    assert model.training is False  # left in eval mode with the best weights

    again = itt.train_image_text(model_for(cfg, bert), train, val, cfg, None, show_progress=False)
    assert [r["loss"] for r in again.history] == [r["loss"] for r in result.history]
    other = itt.train_image_text(model_for(cfg_for(seed=1), bert), train, val, cfg_for(seed=1), None,
                                 show_progress=False)
    assert [r["loss"] for r in other.history] != [r["loss"] for r in result.history]


def test_the_best_validation_weights_are_restored(bert, monkeypatch):
    train, val, cfg = synthetic(), synthetic(12, seed=1), cfg_for(steps=6, val_every=2)
    scores = iter([0.5, 0.2, 0.9])  # best at step 4
    seen = {}

    def fake_validation(model, table, batches, cfg):
        value = next(scores)
        seen[value] = {k: v.clone() for k, v in model.state_dict().items()}
        return value

    monkeypatch.setattr(itt, "validation_loss", fake_validation)
    model = model_for(cfg, bert)
    result = itt.train_image_text(model, train, val, cfg, None, show_progress=False)
    assert result.best_step == 4 and result.best_val_loss == 0.2
    assert all(torch.equal(v, seen[0.2][k]) for k, v in model.state_dict().items())


def test_mono_batches_have_no_parallel_captions_and_cross_batches_add_the_text_term(bert):
    train, val = synthetic(), synthetic(12, seed=1)
    for strategy, expected in (("mono", {False}), ("cross", {True})):
        cfg = cfg_for(strategy=strategy, steps=3, val_every=3)
        history = itt.train_image_text(model_for(cfg, bert), train, val, cfg, None, show_progress=False).history
        assert {r["text_term"] for r in history} == expected and {r["kind"] for r in history} == {strategy}
    cfg = cfg_for(steps=10, val_every=10)
    history = itt.train_image_text(model_for(cfg, bert), train, val, cfg, None, show_progress=False).history
    assert {r["kind"] for r in history} == {"mono", "cross"}
    assert all(r["text_term"] == (r["kind"] == "cross") for r in history)

    model = model_for(cfg, bert).eval()
    sampler = itt.check_config(cfg_for(strategy="cross"), train)
    batch = collate_image_text(train, sampler.next_batch().pairs, tower=model.image_tower)
    assert batch.parallel_captions is not None
    with torch.no_grad():
        cap, img = model.encode_text(batch.captions), model.encode_images(batch.images)
        par = model.encode_text(batch.parallel_captions)
        full, image_only = batch_loss(model, batch, 0.1, 1.0), batch_loss(model, batch, 0.1, 0.0)
    assert full.item() == pytest.approx(image_text_loss(cap, img, par, 0.1).item(), rel=1e-5)
    assert full.item() > image_only.item() + 0.1  # the caption-caption InfoNCE term is in the loss


# ---- runs ------------------------------------------------------------------------------------------


def params_for(bert, **kw):
    base = dict(profile="test", model=bert, seed=0, n_resamples=30, mm_temperature=0.1, encode_batch_size=16,
                mm_dataset="openmoji-cldr", mm_image_root=None, mm_languages=["en", "de"], mm_train_items=20,
                mm_val_items=12, mm_eval_items=10, mm_strategies=["mono", "hybrid"], mm_alpha=0.5, mm_steps=3,
                mm_batch_size=4, mm_lr=1e-3, mm_image_lr=1e-2, mm_weight_decay=0.01, mm_warmup_ratio=0.1,
                mm_max_grad_norm=1.0, mm_text_weight=1.0, mm_image_tower="cnn",
                mm_image_tower_args={"width": 8, "depth": 2}, mm_image_size=16, mm_dim=8, mm_max_length=8,
                mm_train_dtype="float32", mm_val_every=3, mm_val_batches=1, mm_train_languages=None, mm_seeds=None,
                mm_freeze_embeddings=False, mm_frozen_text_layers=0, mm_length_groups=1)
    return {**base, **kw}


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    """Reports and cache in tmp; OpenMoji-CLDR replaced by synthetic splits (same interface)."""
    monkeypatch.setenv("HYBRIDNB_REPORTS", str(tmp_path / "reports"))
    monkeypatch.setenv("HYBRIDNB_CACHE", str(tmp_path / "cache"))
    calls = []

    def fake_load(size=64, seed=0, fractions=None, languages=None):
        calls.append(size)
        return {s: synthetic(n, list(languages), size, seed=k)
                for k, (s, n) in enumerate((("train", 30), ("validation", 14), ("test", 16)))}

    monkeypatch.setattr("hybridnb.image_text.openmoji_cldr.load_openmoji_cldr", fake_load)
    return tmp_path, calls


@pytest.mark.parametrize("change, error, message", [
    ({"mm_strategy": "bilingual"}, ValueError, "unknown strategy"),
    ({"mm_alpha": -0.1}, ValueError, "alpha"),
    ({"mm_languages": ["en", "xx"]}, ValueError, r"\['xx'\] not in openmoji-cldr"),
    ({"mm_batch_size": 32}, ValueError, "exceeds mm_train_items 20"),
    ({"mm_steps": 0}, ValueError, "steps"),
    ({"mm_dataset": "coco"}, ValueError, "mm_dataset must be one of 'openmoji-cldr', 'xtd10', 'multi30k', got 'coco'"),
    ({"mm_dataset": "xtd10", "mm_languages": None}, FileNotFoundError, "mm_image_root"),
    ({"mm_dataset": "multi30k", "mm_languages": None, "mm_image_root": "/nonexistent/flickr30k"},
     FileNotFoundError, "/nonexistent/flickr30k"),
    ({"mm_eval_items": 1}, ValueError, "mm_eval_items"),
    ({"mm_train_languages": ["en", "fr"]}, ValueError, r"mm_train_languages \['fr'\] are not evaluated"),
    ({"mm_train_languages": "en"}, ValueError, "mm_train_languages must be a list of strings or null, got 'en'"),
    ({"mm_train_languages": ["de"], "mm_strategy": "en"}, ValueError, "'en' is not among the training languages"),
    ({"mm_train_languages": ["de"], "mm_strategy": "cross"}, ValueError, "pairs captions of two languages"),
    ({"mm_seeds": [0, 0]}, ValueError, "mm_seeds must be null or a list of distinct"),
    ({"mm_frozen_text_layers": -1}, ValueError, "frozen_text_layers must be an int >= 0"),
    ({"mm_length_groups": 0}, ValueError, "mm_length_groups must be an int >= 1"),
    ({"mm_length_groups": 2.5}, ValueError, "mm_length_groups must be an int >= 1"),
    ({"mm_freeze_embeddings": "yes"}, ValueError, "freeze_embeddings must be true or false"),
])
def test_bad_run_parameters_raise_before_any_work(change, error, message, bert, dirs, monkeypatch):
    tmp_path, calls = dirs
    params = params_for(bert, **change)
    with pytest.raises(error, match=message):
        mm.run_image_text(params, params.get("mm_strategy", "hybrid"))
    assert calls == [] and not (tmp_path / "reports").exists() and not (tmp_path / "cache").exists()
    with pytest.raises(error, match=message):
        mm.check_runs({**params, "mm_strategies": ["mono", params.get("mm_strategy", "hybrid")]})


def test_a_run_is_written_atomically_and_reused_by_hash(bert, dirs, monkeypatch):
    tmp_path, _ = dirs
    params = params_for(bert)
    cfg = mm.check_run(params, "hybrid")
    report_dir = tmp_path / "reports" / "runs" / "test-mm-hybrid-openmoji-cldr-seed0"
    assert mm.run_dirs(cfg)[0] == report_dir

    def broken(*a, **k):
        raise RuntimeError("disk full")

    with monkeypatch.context() as m:  # a failure while writing leaves no report folder, not even a partial one
        m.setattr(mm.reporting, "save_figure", broken)
        with pytest.raises(RuntimeError, match="disk full"):
            mm.run_image_text(params, "hybrid", show_progress=False)
    assert not report_dir.exists() and list((tmp_path / "reports" / "runs").iterdir()) == []

    path, results = mm.run_image_text(params, "hybrid", show_progress=False)
    assert path == report_dir
    assert {"config.json", "results.json", "results.md", "train_log.jsonl", "loss_curve.png", "topk_t2i.npz",
            "per_query_t2i.npz", "per_query_i2t.npz", "per_query_captions.npz"} <= {p.name for p in path.iterdir()}
    assert json.loads((path / "config.json").read_text())["hash"] == cfg.hash == results["training"]["config_hash"]
    assert (tmp_path / "cache" / "runs" / report_dir.name / cfg.hash / "model.pt").is_file()  # weights: cache
    assert not (tmp_path / "cache" / "runs" / report_dir.name / cfg.hash / itt.CHECKPOINT).exists()  # pruned
    assert "Generated by hybridnb" in (path / "results.md").read_text()
    m = results["metrics"]
    assert 0 <= m["t2i_r@10"]["value"] <= 1 and m["mean_recall"]["ci"][0] <= m["mean_recall"]["value"]
    assert results["data"]["items"] == {"train": 20, "validation": 12, "test": 10}
    assert len((path / "train_log.jsonl").read_text().splitlines()) == 3
    loaded = mmc.load_result(path)
    assert loaded.summary()["t2i_r@10"] == pytest.approx(m["t2i_r@10"]["value"])

    monkeypatch.setattr(mm.itt, "train_image_text", broken)  # reused, not retrained
    again_path, again = mm.run_image_text(params, "hybrid", show_progress=False)
    assert again_path == path and again == results
    with pytest.raises(ValueError, match="differ in: steps"):  # another config under the same name: refused
        mm.run_image_text(params_for(bert, mm_steps=4), "hybrid", show_progress=False)
    monkeypatch.setenv(runs.REPLACE_ENV, "1")
    with pytest.raises(RuntimeError, match="disk full"):  # asked to replace: another hashed setting is another run
        mm.run_image_text(params_for(bert, mm_steps=4), "hybrid", show_progress=False)
    assert mm.check_run(params_for(bert, mm_alpha=0.25), "mono").hash == mm.check_run(params, "mono").hash


def test_held_out_languages_are_never_trained_on_and_reported_apart(bert, dirs):
    params = params_for(bert, mm_languages=["en", "de", "fr"], mm_train_languages=["en", "de"])
    path, results = mm.run_image_text(params, "hybrid", show_progress=False)
    log = [json.loads(line) for line in (path / "train_log.jsonl").read_text().splitlines()]
    drawn = {g for r in log for g in ([r["language"]] if isinstance(r["language"], str) else r["language"] or [])}
    assert drawn <= {"en", "de", "mixed"} and "fr" not in drawn  # neither in training nor in validation batches
    assert results["data"]["train_languages"] == ["en", "de"] and results["data"]["unseen_languages"] == ["fr"]
    assert results["data"]["languages"] == ["en", "de", "fr"]  # evaluated on all of them
    split = results["summary"]["languages_seen_unseen"]
    per_language = results["summary"]["per_language"]
    assert split["unseen_t2i_r@10"] == pytest.approx(per_language["fr"]["t2i_r@10"])
    assert split["trained_t2i_r@10"] == pytest.approx((per_language["en"]["t2i_r@10"]
                                                       + per_language["de"]["t2i_r@10"]) / 2)
    assert mm.seen_unseen(results["data"]["train_languages"], ["en", "de", "fr"]) == (["en", "de"], ["fr"])
    # the same languages listed as all of them: the run of mm_train_languages null (one hash)
    every = params_for(bert, mm_languages=["en", "de", "fr"], mm_train_languages=["fr", "de", "en"])
    assert mm.check_run(every, "hybrid").hash == mm.check_run({**every, "mm_train_languages": None}, "hybrid").hash
    assert mm.check_run(params, "hybrid").hash != mm.check_run(every, "hybrid").hash


def test_seeded_comparison_against_every_baseline_and_report(bert, dirs):
    params = params_for(bert, mm_languages=["en", "de", "fr"], mm_train_languages=["en", "de"], mm_seeds=[0, 1],
                        mm_strategies=["en", "mono", "hybrid"])
    assert len(mm.check_runs(params)) == 1 + 3 * 2
    systems = mmc.collect(params, show_progress=False)
    assert list(systems) == ["zero-shot", "En-En", "X-X-mono", "hybrid"]
    assert [r["seed"] for r in systems["hybrid"]["runs"]] == [0, 1]
    assert systems["hybrid"]["runs"][0]["dir"] != systems["hybrid"]["runs"][1]["dir"]
    zs = systems["zero-shot"]["results"]
    assert zs["metrics"]["t2i_r@10"] is None and 0 < zs["metrics"]["caption_cross_map"]["value"] <= 1
    summaries = mmc.seed_summaries(systems, n_resamples=30)
    hybrid = summaries["hybrid"]["t2i R@10"]
    assert len(hybrid["per_seed"]) == 2 and hybrid["mean"] == pytest.approx(np.mean(hybrid["per_seed"]))
    assert hybrid["low"] <= hybrid["mean"] <= hybrid["high"]
    per_seed = [r["results"]["metrics"]["t2i_r@10"]["value"] for r in systems["hybrid"]["runs"]]
    assert hybrid["per_seed"] == pytest.approx(per_seed)
    unseen = summaries["hybrid"]["t2i R@10 unseen"]
    assert unseen["per_seed"] == pytest.approx([r["results"]["summary"]["languages_seen_unseen"]["unseen_t2i_r@10"]
                                                for r in systems["hybrid"]["runs"]])
    table = mmc.comparison_table(summaries)
    assert table.loc["zero-shot", "t2i R@10"] == "n/a" and "[" in table.loc["hybrid", "caption X→Y mAP"]
    assert "[" in table.loc["zero-shot", "caption X→Y mAP unseen"]  # the trained systems' unseen languages
    sig = mmc.significance(systems, "hybrid", n_resamples=30)
    assert list(dict.fromkeys(sig.baseline)) == ["zero-shot", "En-En", "X-X-mono"]  # every baseline
    assert set(sig[sig.baseline == "zero-shot"].metric) == {"caption X→Y mAP", "caption X→Y mAP unseen"}
    assert set(sig[sig.baseline == "X-X-mono"].metric) == set(mmc.COLUMNS)
    assert sig.p_value.between(0, 1).all() and sig.seed_noise_measured[sig.baseline != "zero-shot"].all()
    said = compare.baseline_verdicts(sig)
    assert len(said) == 3 and all(v.startswith("hybrid vs ") for v in said)
    wide = mmc.significance_wide(sig)
    assert list(wide.index) == ["zero-shot", "En-En", "X-X-mono"] and wide.loc["zero-shot", "t2i R@10"] == "n/a"
    test = mm.eval_table(params)
    fig = mmc.plot_examples(systems["hybrid"]["dir"], test, n_items=2, unseen=["fr"])
    assert len(fig.axes) % 8 == 0 and len(fig.axes) // 8 == 2 * 3  # caption, the captioned emoji, a gap, top 5
    assert any("never trained on" in t.get_text() for ax in fig.axes[::8] for t in ax.texts)
    with np.load(systems["hybrid"]["dir"] / "topk_t2i.npz") as z:
        n_hits = sum(int(z["caption_item"][r]) in z["top"][r, :5].tolist() for r in range(len(z["top"])))
    framed = sum(1 for ax in fig.axes for p in ax.patches if p.get_edgecolor()[:3] == (0.0, 0.5019607843137255, 0.0))
    assert framed <= n_hits and all(ax.images for ax in fig.axes[1::8])  # the right emoji is always shown
    per_language = mmc.per_language_summaries(systems, n_resamples=30)
    assert list(per_language) == ["En-En", "X-X-mono", "hybrid"] and set(per_language["hybrid"]) == {"en", "de", "fr"}
    bars = mmc.plot_per_language(systems, per_language)
    labels = [t.get_text() for t in bars.axes[0].get_xticklabels()]
    assert labels == ["en", "de", "fr*"]  # trained first, the unseen marked
    assert bars.get_size_inches()[0] < 12 and any("never trained on" in t.get_text() for t in bars.axes[0].texts)
    report = mmc.report_markdown(params, systems, table, sig, ["figures/x.png"], mm.reporting.provenance("test"))
    assert "All emojis designed by OpenMoji" in report and "Generated by hybridnb" in report
    assert "Never trained on" in report and "fr" in report and "M-CLIP" in report and "91.8" in report
    assert report.count("hybrid vs ") == 3


@pytest.mark.parametrize("profile", ["ci", "cpu", "paper"])
def test_profiles_pass_the_image_text_checks(profile):
    params = config.load_profile(profile)
    cfgs = mm.check_runs(params)
    assert [c.run_name for c in cfgs][0] == f"{profile}-mm-zero-shot-openmoji-cldr-seed0"
    assert len({c.hash for c in cfgs}) == len(cfgs)


# ---- several runs at once (mm_workers) ---------------------------------------------------------------


def test_runs_in_worker_processes_match_runs_in_one_process(bert, dirs, monkeypatch):
    """mm_workers=2 computes the zero-shot baseline and the runs in two processes (forked here, so the synthetic
    data loader carries over; the notebooks use spawn) and gives the same results as one after another in this
    process, same order."""
    tmp_path, _ = dirs
    params = params_for(bert, mm_seeds=[0, 1], mm_strategies=["mono", "cross"])
    (zs_path, zs), serial = mm.run_image_text_all({**params, "mm_workers": 1}, show_progress=False)
    metrics = {(s, k): r["metrics"] for s, k, _, r in serial}
    for path in [zs_path] + [path for _, _, path, _ in serial]:
        shutil.rmtree(path)
    warmed = []
    monkeypatch.setattr(mm, "warm_caches", lambda *a, **k: warmed.append(a[1:]) or {})
    monkeypatch.setattr(mm, "START_METHOD", "fork")
    (zs_path2, zs2), parallel = mm.run_image_text_all({**params, "mm_workers": 2}, show_progress=False)
    assert [(s, k) for s, k, _, _ in parallel] == [("mono", 0), ("mono", 1), ("cross", 0), ("cross", 1)]
    assert warmed == [("mono", 0)]  # the caches are warmed once, before the workers take runs
    assert zs_path2 == zs_path and zs2["metrics"]["caption_cross_map"]["value"] == pytest.approx(
        zs["metrics"]["caption_cross_map"]["value"], abs=1e-5)
    for s, k, path, results in parallel:
        assert path.is_dir() and results["timings"]["torch_threads"] >= 1
        for name, entry in results["metrics"].items():
            if entry is not None:
                assert entry["value"] == pytest.approx(metrics[s, k][name]["value"], abs=1e-5), (s, k, name)


def test_the_pool_takes_the_longest_runs_first_and_the_zero_shot_last(bert, dirs, monkeypatch):
    """The order the runs are handed to the workers: most cross batches first, so that a short run is the last
    to finish; the zero-shot evaluation after every run, where it fills a core the last run leaves idle."""
    params = params_for(bert, mm_seeds=[0], mm_strategies=["en", "mono", "cross", "hybrid"], mm_workers=2)
    submitted = []

    class Pool:  # records what is submitted, runs nothing
        def __init__(self, *a, **k):
            pass

        def submit(self, fn, *args):
            from concurrent.futures import Future

            submitted.append(args[0].run_name if args else fn.__name__)
            future = Future()
            future.set_result("")
            return future

        def shutdown(self, **k):
            pass

    import concurrent.futures
    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", Pool)
    monkeypatch.setattr(mm, "warm_caches", lambda *a, **k: {})
    monkeypatch.setattr(mm.run_folder, "execute", lambda task, show: (task.cfg.run_name, {}))
    mm.run_image_text_all(params, show_progress=False)
    assert submitted == ["_worker_ready", "_worker_ready", "test-mm-cross-openmoji-cldr-seed0",
                         "test-mm-hybrid-openmoji-cldr-seed0", "test-mm-en-openmoji-cldr-seed0",
                         "test-mm-mono-openmoji-cldr-seed0", "test-mm-zero-shot-openmoji-cldr-seed0"]


def test_a_failed_worker_run_raises_naming_it_and_writes_no_report(bert, dirs, monkeypatch):
    tmp_path, _ = dirs
    params = params_for(bert, mm_seeds=[0, 1], mm_strategies=["mono"], mm_workers=2)
    monkeypatch.setattr(mm, "warm_caches", lambda *a, **k: {})
    monkeypatch.setattr(mm, "START_METHOD", "fork")
    monkeypatch.setattr(mm.ImageTextRun, "train", lambda self, data, show: (_ for _ in ()).throw(
        RuntimeError(f"out of memory in {self.cfg.run_name}")))
    with pytest.raises(RuntimeError, match=r"image-text run test-mm-mono-openmoji-cldr-seed\d failed in its worker "
                                           r"process: .*out of memory"):
        mm.run_image_text_all(params, show_progress=False)
    runs_dir = tmp_path / "reports" / "runs"  # the zero-shot evaluation may have finished: a whole report
    written = sorted(p.name for p in runs_dir.iterdir()) if runs_dir.exists() else []
    assert written in ([], ["test-mm-zero-shot-openmoji-cldr-seed0"])
    assert all((runs_dir / name / "results.json").is_file() for name in written)


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "2"])
def test_bad_mm_workers_is_refused_before_any_work(value, bert, dirs):
    tmp_path, calls = dirs
    with pytest.raises(ValueError, match="mm_workers must be an int >= 1"):
        mm.check_runs(params_for(bert, mm_workers=value))
    assert calls == [] and not (tmp_path / "cache").exists()


def test_auto_train_dtype_is_resolved_before_the_hash(bert, monkeypatch):
    """`mm_train_dtype: auto` means bf16 autocast on a CPU with native bf16 and float32 elsewhere; the resolved
    value enters the hash, so a run trained in bf16 is not reused where float32 would train."""
    params = params_for(bert, mm_train_dtype="auto")
    hashes = {}
    for native in (True, False):
        monkeypatch.setattr(mm.precision, "native_bf16", lambda device=None, native=native: native)
        cfg = mm.check_run(params, "hybrid")
        assert cfg.train_dtype == ("bfloat16" if native else "float32")
        assert cfg.hash == mm.check_run({**params, "mm_train_dtype": cfg.train_dtype}, "hybrid").hash
        hashes[native] = cfg.hash
    assert hashes[True] != hashes[False]


def test_auto_train_dtype_reuses_a_finished_run_of_the_other_precision(bert, dirs, monkeypatch):
    """A run finished in bf16 (a CPU with native bf16) stands in for `auto` on a CPU without, as a text run's
    does: the committed image-text runs are reused there, not retrained in float32."""
    tmp_path, _ = dirs
    params = params_for(bert, mm_train_dtype="auto")
    monkeypatch.setattr(mm.precision, "native_bf16", lambda device=None: True)
    bf16 = mm.check_run(params, "hybrid")
    folder = mm.run_dirs(bf16)[0]
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"hash": bf16.hash}))
    (folder / "results.json").write_text("{}")
    monkeypatch.setattr(mm.precision, "native_bf16", lambda device=None: False)
    cfg = mm.check_run(params, "hybrid")
    assert cfg.hash == bf16.hash and cfg.train_dtype == "bfloat16"
    assert mm.check_run({**params, "mm_train_dtype": "float32"}, "hybrid").train_dtype == "float32"


def test_the_saved_weights_are_what_training_changed_and_reload_to_the_same_results(bert, dirs):
    """model.pt holds the trained weights only (not the frozen word embedding); loaded into a freshly built model
    (strict=False), it gives the run's own test metrics again."""
    tmp_path, _ = dirs
    params = params_for(bert, mm_freeze_embeddings=True)
    cfg = mm.check_run(params, "hybrid")
    path, results = mm.run_image_text(params, "hybrid", show_progress=False)
    state = torch.load(mm.run_dirs(cfg)[1] / "model.pt")
    model = itt.build_model(cfg.training())
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and not frozen & set(state) and set(state) == set(model.state_dict()) - frozen
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert set(missing) == frozen and not unexpected
    again, _ = mm.evaluate(model, mm.prepare_data(cfg)["test"], cfg)
    assert again.summary()["t2i_r@10"] == pytest.approx(results["metrics"]["t2i_r@10"]["value"], abs=1e-6)
    # a run trained in bf16 is evaluated under bf16 autocast: float32 arrays out, close to float32's
    texts = mm.prepare_data(cfg)["test"].caption_rows()[0][:8]
    exact = model.embed_texts(texts)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast = model.embed_texts(texts)
    assert fast.dtype == np.float32 and np.abs(fast - exact).max() < 0.05
    bf16, _ = mm.evaluate(model, mm.prepare_data(cfg)["test"], cfg.replace(train_dtype="bfloat16"))
    assert 0 <= bf16.summary()["t2i_r@10"] <= 1


# ---- checkpoints and exact resume (the training loop the text runs use) ------------------------------------

RESUME_RUNNER = """
import sys, time, torch
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[1])
from tiny_models import caption_table
from hybridnb.image_text import trainer as itt
from hybridnb.models.encoders import Encoder
bert, out, delay = sys.argv[2], sys.argv[3], float(sys.argv[4])
if delay:  # slow each step down so the test can kill the process mid-run
    embed = itt.batch_embeddings
    itt.batch_embeddings = lambda *a, **k: (time.sleep(delay), embed(*a, **k))[1]
# "validation": the image projection's norm, which Adam grows from its small initial values: the best step is the
# first validation (2), before every checkpoint the run can resume from, so the best weights come from the checkpoint
itt.validation_loss = lambda model, *a: float(model.image_proj.weight.detach().norm())
cfg = itt.ImageTextTraining(strategy="hybrid", steps=12, batch_size=6, lr=2e-3, image_lr=3e-2, warmup_ratio=0.0,
                            image_size=16, dim=16, max_length=8, image_tower_args={"width": 8, "depth": 2},
                            val_every=2, val_batches=2, save_every=3, temperature=0.1, seed=3)
model = itt.build_model(cfg, Encoder.from_pretrained(bert, max_length=cfg.max_length))
result = itt.train_image_text(model, caption_table(), caption_table(12, seed=1), cfg, out, show_progress=False)
torch.save({"weights": itt.trained_state(model), "best_step": result.best_step}, f"{out}/trained.pt")
"""


def _run_image_text(bert, out: Path, delay: float = 0.0):
    import subprocess

    return subprocess.Popen([sys.executable, "-c", RESUME_RUNNER, str(Path(__file__).parent), bert, str(out),
                             str(delay)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_killed_image_text_run_resumes_to_the_same_weights_and_log(bert, tmp_path):
    """kill -9 after a checkpoint, run again: the same trained (best) weights, best step and log as a run never
    killed; the best weights found before the kill come back from the checkpoint."""
    import os
    import signal
    import time

    reference = _run_image_text(bert, tmp_path / "ref")  # side by side
    killed = _run_image_text(bert, tmp_path / "killed", delay=0.25)
    log = tmp_path / "killed" / itt.LOG
    deadline = time.time() + 300
    while time.time() < deadline:  # kill once step 5 is logged (a checkpoint exists at step 3)
        if log.exists() and sum(1 for _ in log.open()) >= 5:
            break
        assert killed.poll() is None, killed.stderr.read()
        time.sleep(0.02)
    os.kill(killed.pid, signal.SIGKILL)
    assert killed.wait(timeout=60) == -signal.SIGKILL
    assert reference.wait(timeout=300) == 0, reference.stderr.read()
    state = torch.load(tmp_path / "killed" / itt.CHECKPOINT, weights_only=False)
    assert 3 <= state["step"] < 12 and not (tmp_path / "killed" / "trained.pt").exists()

    resumed = _run_image_text(bert, tmp_path / "killed")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    ref, res = (torch.load(tmp_path / d / "trained.pt") for d in ("ref", "killed"))
    assert ref["best_step"] == res["best_step"] == 2  # the best weights are not the last ones
    assert ref["weights"].keys() == res["weights"].keys()
    for k in ref["weights"]:
        assert torch.equal(ref["weights"][k], res["weights"][k]), k
    strip = lambda p: [{k: v for k, v in json.loads(line).items() if k not in ("pairs_per_s", "step_s")}  # noqa: E731
                       for line in p.read_text().splitlines()]
    assert strip(tmp_path / "ref" / itt.LOG) == strip(log)
    assert [r["step"] for r in strip(log)] == list(range(12))


def test_mm_save_every_reaches_the_trainer_and_not_the_hash(bert):
    default, often = mm.check_run(params_for(bert), "hybrid"), mm.check_run(params_for(bert, mm_save_every=1), "hybrid")
    assert default.hash == often.hash  # checkpoints change no result: the committed runs keep their hashes
    assert often.training().save_every == 1 and default.save_every == itt.ImageTextTraining().save_every
    with pytest.raises(ValueError, match="mm_save_every must be an int >= 1"):
        mm.check_run(params_for(bert, mm_save_every=0), "hybrid")


def test_a_checkpoint_of_another_config_is_refused(bert, tmp_path):
    train, val = synthetic(), synthetic(12, seed=1)
    cfg = cfg_for(steps=2, val_every=2, save_every=2)
    itt.train_image_text(model_for(cfg, bert), train, val, cfg, tmp_path / "run", show_progress=False)
    assert (tmp_path / "run" / itt.CHECKPOINT).is_file()
    other = cfg_for(steps=2, val_every=2, save_every=2, lr=1e-3)
    with pytest.raises(ValueError, match="different configuration"):
        itt.train_image_text(model_for(other, bert), train, val, other, tmp_path / "run", show_progress=False)


def _cli_image_text(profile: Path, reports: Path, world: int) -> tuple[int, str]:
    """`python -m hybridnb train-image-text` on one process, or on `world` ranks under torchrun (gloo)."""
    import os
    import subprocess

    env = {**os.environ, "HYBRIDNB_REPORTS": str(reports), "HYBRIDNB_CACHE": str(reports.parent / "cache"),
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    launcher = [sys.executable] if world == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                    "--nproc_per_node", str(world)]
    proc = subprocess.run([*launcher, "-m", "hybridnb", "train-image-text", "--profile", str(profile),
                           "--strategy", "hybrid", "--seed", "0"], env=env, capture_output=True, text=True,
                          timeout=600)
    return proc.returncode, proc.stdout + proc.stderr


def test_an_image_text_run_under_torchrun_matches_one_process(tmp_path):
    """The run skeleton under torchrun (2 CPU ranks, gloo) for an image-text run, through the command line: each
    rank embeds half of the global batch, rank 0 alone evaluates and writes the run folder; the losses, the
    metrics and the trained weights are those of one process; a second launch reuses the finished run. (No
    dropout: each rank draws its own masks, so with dropout 2 ranks are another random draw than 1 process.)"""
    import yaml

    bert = str(save_tiny_bert(tmp_path / "bert_nodrop", dropout=0.0))
    params = params_for(bert, mm_languages=["en", "de", "fr"], mm_train_items=24, mm_steps=4, mm_val_every=2)
    profile = tmp_path / "image_text.yaml"
    profile.write_text(yaml.safe_dump(params), encoding="utf-8")
    rc, out = _cli_image_text(profile, tmp_path / "one" / "reports", 1)
    assert rc == 0, out[-3000:]
    rc, out = _cli_image_text(profile, tmp_path / "two" / "reports", 2)
    assert rc == 0, out[-3000:]
    name = mm.check_run(params, "hybrid").run_name
    one, two = (tmp_path / d / "reports" / "runs" / name for d in ("one", "two"))
    a, b = (json.loads((d / "results.json").read_text()) for d in (one, two))
    assert a["training"]["config_hash"] == b["training"]["config_hash"] and a["training"]["best_step"] == \
        b["training"]["best_step"]
    strip = lambda p: [json.loads(line) for line in (p / "train_log.jsonl").read_text().splitlines()]  # noqa: E731
    for mine, theirs in zip(strip(two), strip(one), strict=True):
        assert (mine["kind"], mine["language"]) == (theirs["kind"], theirs["language"])
        assert mine["loss"] == pytest.approx(theirs["loss"], rel=1e-4)
    for key, value in a["metrics"].items():
        assert b["metrics"][key]["value"] == pytest.approx(value["value"], abs=1e-4), key
    digest = a["training"]["config_hash"]
    weights = [torch.load(tmp_path / d / "cache" / "runs" / name / digest / "model.pt", weights_only=False)
               for d in ("one", "two")]
    assert weights[0].keys() == weights[1].keys()
    # the CNN's conv biases sit right before a GroupNorm of one channel per group, which removes them: their
    # gradient is rounding noise that AdamW scales to full steps, so they differ without changing any output
    removed = {f"image_tower.body.{3 * i}.bias" for i in range(3)}  # depth 2: three conv layers
    assert removed <= weights[0].keys()
    for k, v in weights[0].items():
        if k not in removed:
            torch.testing.assert_close(weights[1][k], v, rtol=1e-4, atol=1e-5, msg=lambda m, k=k: f"{k}: {m}")
    rc, out = _cli_image_text(profile, tmp_path / "two" / "reports", 2)  # finished: reused, nothing trained
    assert rc == 0, out[-3000:]
    assert json.loads((two / "results.json").read_text())["provenance"] == b["provenance"]  # not rewritten
