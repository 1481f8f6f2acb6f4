"""hybridnb.training.trainer on a tiny random BERT: the step, AdamW/schedule, GradCache switch, best/final, resume after kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from hybridnb import training
from hybridnb.models.encoders import Encoder
from hybridnb.data.train_data import collate, split_validation
from tiny_models import save_tiny_bert, synthetic_table


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    model = save_tiny_bert(root / "bert", dropout=0.1)
    model0 = save_tiny_bert(root / "bert_nodrop", dropout=0.0)
    table = synthetic_table()
    table.save(root / "table.json")
    return {"model": model, "model_nodrop": model0, "table": table, "table_path": root / "table.json"}


def cfg(**kw) -> training.TextTraining:
    base = dict(steps=6, batch_size=8, save_every=3, val_every=2, val_batches=2, lr=1e-3, seed=0,
                train_dtype="float32")
    return training.TextTraining(**{**base, **kw})


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "0_Transformer" / "model.safetensors")


def test_first_step_loss_and_update_match_a_hand_computation(tiny, tmp_path, one_thread):
    """The logged loss is InfoNCE over [positives; hard negatives] at T=0.05; the update is one AdamW step."""
    table = tiny["table"]
    config = cfg(steps=1, warmup_ratio=0.0, n_hard_negatives=1, max_grad_norm=1e9)
    enc = Encoder.from_pretrained(tiny["model_nodrop"], max_length=32)
    before = {k: v.clone() for k, v in enc.model.state_dict().items()}
    sampler = training.check_config(config, table)
    pairs = sampler.next_batch().pairs  # the same first batch train() will draw (same seed)
    q_txt, p_txt, n_txt = collate(table, pairs, 1)
    with torch.no_grad():
        q = enc(enc.tokenize(q_txt, "query")).double().numpy()
        c = torch.cat([enc(enc.tokenize(p_txt, "passage")), enc(enc.tokenize(n_txt, "passage"))]).double().numpy()
    logits = q @ c.T / 0.05
    logits -= logits.max(axis=1, keepdims=True)
    expected = float(np.mean(np.log(np.exp(logits).sum(axis=1)) - np.diag(logits[:, : len(q)])))

    # reference update: plain torch AdamW on the same loss (first step at the full lr: no warm-up)
    ref = Encoder.from_pretrained(tiny["model_nodrop"], max_length=32)
    ref.train()
    opt = training.trainer.build_optimizer(ref, config.lr, config.weight_decay)
    loss = torch.nn.functional.cross_entropy(
        ref(ref.tokenize(q_txt, "query")) @ torch.cat([ref(ref.tokenize(p_txt, "passage")),
                                                        ref(ref.tokenize(n_txt, "passage"))]).T / 0.05,
        torch.arange(len(q_txt)))
    loss.backward()
    opt.step()

    result = training.train(enc, table, table.subset(range(10)), config, tmp_path / "run", show_progress=False)
    assert result.history[0]["loss"] == pytest.approx(expected, rel=1e-5)
    assert result.history[0]["lr"] == pytest.approx(config.lr)
    after, expected_after = enc.model.state_dict(), ref.model.state_dict()
    changed = 0
    for name in before:
        torch.testing.assert_close(after[name], expected_after[name], rtol=1e-4, atol=1e-6)
        changed += not torch.equal(after[name], before[name])
    assert changed > 0


def test_learning_rate_warms_up_then_decays_linearly(tiny, tmp_path, one_thread):
    enc = Encoder.from_pretrained(tiny["model"], max_length=32)
    result = training.train(enc, tiny["table"], tiny["table"].subset(range(10)),
                            cfg(steps=10, warmup_ratio=0.2, val_every=10, save_every=10), tmp_path / "run",
                            show_progress=False)
    lrs = [r["lr"] for r in result.history]
    assert lrs[0] == 0.0 and lrs[2] == pytest.approx(1e-3)
    assert lrs[1] == pytest.approx(0.5e-3)
    assert all(a > b for a, b in zip(lrs[2:], lrs[3:]))
    assert lrs[-1] == pytest.approx(1e-3 / 8)


def test_gradcache_switch_trains_to_the_same_weights(tiny, tmp_path, one_thread):
    finals = []
    for name, gc in (("plain", False), ("gc", True)):
        enc = Encoder.from_pretrained(tiny["model_nodrop"], max_length=32)
        training.train(enc, tiny["table"], tiny["table"].subset(range(10)),
                       cfg(steps=4, gradcache=gc, chunk_size=3), tmp_path / name, show_progress=False)
        finals.append(weights(tmp_path / name / "final"))
    for k in finals[0]:
        torch.testing.assert_close(finals[0][k], finals[1][k], rtol=1e-4, atol=1e-5)


def test_best_is_lowest_validation_loss_and_saved_encoders_load(tiny, tmp_path, one_thread):
    from sentence_transformers import SentenceTransformer

    train_t, val_t = split_validation(tiny["table"], 0.25, seed=0)
    enc = Encoder.from_pretrained(tiny["model"], max_length=32)
    result = training.train(enc, train_t, val_t, cfg(steps=6, val_every=2), tmp_path / "run", show_progress=False)
    vals = {r["step"] + 1: r["val_loss"] for r in result.history if "val_loss" in r}
    assert sorted(vals) == [2, 4, 6]
    assert result.best_step == min(vals, key=vals.get)
    assert result.best_val_loss == pytest.approx(min(vals.values()))
    log = [json.loads(line) for line in result.log_path.read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(6))
    assert {"loss", "lr", "grad_norm", "kind", "pairs_per_s"} <= set(log[0])

    texts = ["hello world ?", "paris is a capital city"]
    final = Encoder.from_pretrained(result.final_dir)
    np.testing.assert_allclose(final.encode(texts, "query", show_progress=False),
                               enc.encode(texts, "query", show_progress=False), atol=1e-6)
    st = SentenceTransformer(str(result.final_dir), device="cpu")
    np.testing.assert_allclose(st.encode(texts), enc.encode(texts, "query", show_progress=False), atol=1e-5)
    assert (result.best_dir / "modules.json").exists()


def test_final_at_the_best_step_shares_best_s_files_on_disk(tiny, tmp_path, one_thread):
    """A final/ that is best/ (the best step is the last) holds hard links to best/'s files, not a second copy;
    its own model card stays its own, and both load to the same weights."""
    train_t, val_t = split_validation(tiny["table"], 0.25, seed=0)
    enc = Encoder.from_pretrained(tiny["model_nodrop"], max_length=32)
    result = training.train(enc, train_t, val_t, cfg(steps=4, val_every=4, lr=1e-4), tmp_path / "run",
                            show_progress=False)
    assert result.best_step == 4
    w = "0_Transformer/model.safetensors"
    assert (result.final_dir / w).stat().st_ino == (result.best_dir / w).stat().st_ino
    assert (result.final_dir / "README.md").read_text() != (result.best_dir / "README.md").read_text()
    fw, bw = weights(result.final_dir), weights(result.best_dir)
    assert fw.keys() == bw.keys() and all(torch.equal(fw[k], bw[k]) for k in fw)


def test_link_identical_links_equal_files_only(tmp_path):
    from hybridnb.training import checkpoints

    ref, other = tmp_path / "best", tmp_path / "final"
    for d, b in ((ref, b"B"), (other, b"F")):
        (d / "sub").mkdir(parents=True)
        (d / "sub" / "same.bin").write_bytes(b"x" * 1000)
        (d / "card.md").write_bytes(b * 10)          # same size, other bytes
    (other / "only_here.txt").write_text("alone")
    saved = checkpoints.link_identical(other, ref)
    assert saved == 1000
    assert (other / "sub" / "same.bin").stat().st_ino == (ref / "sub" / "same.bin").stat().st_ino
    assert (other / "card.md").read_bytes() == b"F" * 10 and (other / "only_here.txt").read_text() == "alone"
    assert checkpoints.link_identical(other, ref) == 0   # already one file: nothing more to do
    assert not list(other.rglob(".*.link"))


@pytest.mark.parametrize("change, message", [
    (dict(strategy="bilingual"), "unknown"),
    (dict(alpha=1.5), "alpha"),
    (dict(strategy={"mono": 0.7, "cross": 0.7}), "sum"),
    (dict(strategy={"mono": -0.5, "cross": 1.5}), "negative"),
    (dict(batch_size=500), "exceeds the number of items"),
    (dict(n_hard_negatives=5), "hard negative"),
    (dict(steps=0), "steps"),
    (dict(lr=-1.0), "lr"),
    (dict(warmup_ratio=2.0), "warmup_ratio"),
    (dict(train_dtype="int8"), "train_dtype"),
])
def test_bad_config_fails_before_training(tiny, tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        training.train(None, tiny["table"], tiny["table"], cfg(**change), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_resume_refuses_a_checkpoint_of_another_config(tiny, tmp_path, one_thread):
    enc = Encoder.from_pretrained(tiny["model"], max_length=32)
    training.train(enc, tiny["table"], tiny["table"].subset(range(10)), cfg(steps=3), tmp_path / "run",
                   show_progress=False)
    with pytest.raises(ValueError, match="different configuration"):
        training.train(enc, tiny["table"], tiny["table"].subset(range(10)), cfg(steps=3, lr=2e-3),
                       tmp_path / "run", show_progress=False)


def test_a_full_disk_is_found_before_training_and_before_a_save_leaves_a_temp_file(tiny, tmp_path, monkeypatch):
    """A full disk once surfaced as an unclear torch error mid-save and left a 586 MB temp checkpoint: the
    trainer checks the room for its checkpoint and encoders before step 0, and every save checks again."""
    import shutil as sh
    from collections import namedtuple

    from hybridnb.training import checkpoints

    usage, real_disk_usage = namedtuple("usage", "total used free"), sh.disk_usage
    monkeypatch.setattr(checkpoints.shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000))  # 1 kB free
    enc = Encoder.from_pretrained(tiny["model"], max_length=32)
    with pytest.raises(OSError, match=r"not enough free disk for the run's checkpoint and encoders in .*run: needs about .*MiB, 0\.0 MiB free"):
        training.train(enc, tiny["table"], tiny["table"].subset(range(10)), cfg(steps=3), tmp_path / "run",
                       show_progress=False)
    assert not (tmp_path / "run" / training.trainer.CHECKPOINT).exists()
    big = {"w": torch.zeros(1_000_000)}  # 4 MB of tensors
    with pytest.raises(OSError, match=r"the checkpoint checkpoint.pt .*needs about 5\.0 MiB, 0\.0 MiB free"):
        checkpoints.save_checkpoint(tmp_path / "checkpoint.pt", **big)
    assert list(tmp_path.glob("*checkpoint*")) == []  # nothing written, no temp file
    monkeypatch.setattr(checkpoints.shutil, "disk_usage", real_disk_usage)
    checkpoints.save_checkpoint(tmp_path / "checkpoint.pt", **big)
    assert sorted(p.name for p in tmp_path.glob("*checkpoint*")) == ["checkpoint.pt", "checkpoint.pt.sha256"]


def test_fresh_cutoff_ignores_older_checkpoints(tiny, tmp_path, monkeypatch, one_thread):
    """make reproduce FRESH=1: a checkpoint older than HYBRIDNB_FRESH_SINCE is not resumed from."""
    enc = Encoder.from_pretrained(tiny["model"], max_length=32)
    val = tiny["table"].subset(range(10))
    training.train(enc, tiny["table"], val, cfg(steps=3), tmp_path / "run", show_progress=False)
    monkeypatch.setenv("HYBRIDNB_FRESH_SINCE", "0")  # everything is newer than 1970: resumed (and refused)
    with pytest.raises(ValueError, match="different configuration"):
        training.train(enc, tiny["table"], val, cfg(steps=3, lr=2e-3), tmp_path / "run", show_progress=False)
    monkeypatch.setenv("HYBRIDNB_FRESH_SINCE", repr(time.time() + 60))  # the checkpoint predates the cutoff
    result = training.train(enc, tiny["table"], val, cfg(steps=3, lr=2e-3), tmp_path / "run", show_progress=False)
    assert [r["step"] for r in result.history] == [0, 1, 2]  # trained from step 0, not resumed


RUNNER = """
import sys, time, torch
torch.set_num_threads(1)
from hybridnb.training import gradcache
from hybridnb import training
from hybridnb.models.encoders import Encoder
from hybridnb.data.train_data import ParallelTable, split_validation
model, table, out, delay = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
if delay:  # slow each step down so the test can kill the process mid-run
    step = gradcache.plain_step
    gradcache.plain_step = lambda *a, **k: (time.sleep(delay), step(*a, **k))[1]
train_t, val_t = split_validation(ParallelTable.load(table), 0.25, seed=0)
enc = Encoder.from_pretrained(model, max_length=32)
cfg = training.TextTraining(steps=12, batch_size=8, save_every=3, val_every=4, val_batches=2, lr=1e-3,
                            strategy="hybrid", train_dtype="float32", seed=3)
training.train(enc, train_t, val_t, cfg, out, show_progress=False)
"""


def _run(tiny, out: Path, delay: float = 0.0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", RUNNER, str(tiny["model"]), str(tiny["table_path"]), str(out),
                             str(delay)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_killed_run_resumes_to_the_same_weights_and_log(tiny, tmp_path):
    reference = _run(tiny, tmp_path / "ref")
    assert reference.wait(timeout=300) == 0, reference.stderr.read()

    killed = _run(tiny, tmp_path / "killed", delay=0.25)
    log = tmp_path / "killed" / training.trainer.LOG
    deadline = time.time() + 300
    while time.time() < deadline:  # kill once step 5 is logged (a checkpoint exists at step 3)
        if log.exists() and sum(1 for _ in log.open()) >= 5:
            break
        time.sleep(0.02)
    os.kill(killed.pid, signal.SIGKILL)
    assert killed.wait(timeout=60) == -signal.SIGKILL
    state = torch.load(tmp_path / "killed" / training.trainer.CHECKPOINT, weights_only=False)
    assert 3 <= state["step"] < 12 and not (tmp_path / "killed" / "final").exists()

    resumed = _run(tiny, tmp_path / "killed")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    ref_w, res_w = weights(tmp_path / "ref" / "final"), weights(tmp_path / "killed" / "final")
    assert ref_w.keys() == res_w.keys()
    for k in ref_w:
        assert torch.equal(ref_w[k], res_w[k]), k
    for k, v in weights(tmp_path / "ref" / "best").items():
        assert torch.equal(v, weights(tmp_path / "killed" / "best")[k]), k
    strip = lambda p: [{k: v for k, v in json.loads(line).items() if k not in ("pairs_per_s", "step_s")}  # noqa: E731
                       for line in p.read_text().splitlines()]
    assert strip(tmp_path / "ref" / training.trainer.LOG) == strip(log)
