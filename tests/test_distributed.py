"""hybridnb.training.distributed under torchrun (2 CPU processes, gloo) against one process with the global batch.

One torchrun job (WORKER) computes a step, sampler batches and two short trainings on 2 ranks and saves
them; the test process computes the same in one process and compares. Another (IMAGE_TEXT_WORKER) trains an
image-text model through the same loop on 2 ranks, compared the same way. Three more jobs (RUNNER) train,
get killed and resume. Kill: SIGKILL to the torchrun agent and to each worker by its pid (torchrun starts
its workers in their own sessions, so the agent's process group does not reach them).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hybridnb.training import distributed, gradcache, losses
from hybridnb import training
from hybridnb.models.encoders import Encoder
from hybridnb.data.train_data import ParallelTable, split_validation
from tiny_models import caption_table, save_tiny_bert, synthetic_table

WORLD = 2
STRATEGY = {"mono": 0.4, "cross": 0.3, "mixed": 0.2, "en": 0.1}  # every batch kind
STEP_CFG = dict(batch_size=8, seed=0, n_hard_negatives=1)
TRAIN_CFG = dict(steps=3, batch_size=8, save_every=3, val_every=2, val_batches=2, lr=1e-3, seed=0,
                 train_dtype="float32", strategy="hybrid")
SAMPLER_STEPS = 24

WORKER = """
import json, os, sys, torch
torch.set_num_threads(1)
from hybridnb.training import distributed, losses
from hybridnb import training
from hybridnb.models.encoders import Encoder
from hybridnb.data.train_data import ParallelTable, split_validation
model, table_path, out = sys.argv[1:4]
step_cfg, train_cfg, strategy, n_steps = (json.loads(a) for a in sys.argv[4:8])
distributed.init()
rank = distributed.rank()
table = ParallelTable.load(table_path)

# one step, plain and GradCache, on this rank's shard
sampler = training.check_config(training.TextTraining(**step_cfg), table)  # world and rank from torchrun
batch = sampler.next_batch()
enc = Encoder.from_pretrained(model, max_length=32)
enc.train()
ddp = distributed.wrap(enc)
qf, pf, nf, _ = training.trainer._features(enc, table, batch.pairs, step_cfg["n_hard_negatives"])
result = {"world": distributed.world_size(), "pairs": torch.as_tensor(batch.pairs)}
for name, chunk in (("plain", None), ("gradcache", 3)):
    result[name + "_loss"] = distributed.contrastive_step(ddp, qf, pf, losses.InfoNCE(), nf, chunk_size=chunk)
    result[name + "_grads"] = {k: p.grad.clone() for k, p in enc.named_parameters()}
    enc.zero_grad(set_to_none=True)
# the plain step with each forward in 2 length groups (no dropout here: the same function)
result["length_groups_loss"] = distributed.contrastive_step(ddp, qf, pf, losses.InfoNCE(), nf, length_groups=2)
result["length_groups_grads"] = {k: p.grad.clone() for k, p in enc.named_parameters()}
enc.zero_grad(set_to_none=True)
# the same with false negatives masked, on a table whose items share answers (3 answer texts per language)
shared = ParallelTable.load(os.path.join(os.path.dirname(table_path), "shared.json"))
batch = training.check_config(training.TextTraining(**step_cfg), shared).next_batch()
qf, pf, nf, exclude = training.trainer._features(enc, shared, batch.pairs, step_cfg["n_hard_negatives"], True)
result["masked_exclude"] = exclude
for name, chunk in (("masked_plain", None), ("masked_gradcache", 3)):
    loss_fn = losses.InfoNCE(exclude=exclude)
    result[name + "_loss"] = distributed.contrastive_step(ddp, qf, pf, loss_fn, nf, chunk_size=chunk)
    result[name + "_grads"] = {k: p.grad.clone() for k, p in enc.named_parameters()}
    enc.zero_grad(set_to_none=True)
torch.save(result, os.path.join(out, f"step{rank}.pt"))

# the batches a training run on this rank would draw
sampler = training.check_config(training.TextTraining(**{**step_cfg, "strategy": strategy}), table)
batches = [sampler.next_batch() for _ in range(n_steps)]
with open(os.path.join(out, f"sampler{rank}.json"), "w") as f:
    json.dump([[b.step, b.kind, b.language, sampler.item_ids_of(b)] for b in batches], f)

# short trainings through training.train
train_t, val_t = split_validation(table, 0.25, seed=0)
for gc in (False, True):
    enc = Encoder.from_pretrained(model, max_length=32)
    cfg = training.TextTraining(**train_cfg, gradcache=gc, chunk_size=3)
    training.train(enc, train_t, val_t, cfg, os.path.join(out, f"train_gc{int(gc)}"), show_progress=False)
distributed.cleanup()
"""

RUNNER = """
import os, sys, time, torch
from pathlib import Path
torch.set_num_threads(1)
from hybridnb.training import distributed, gradcache
from hybridnb import training
from hybridnb.models.encoders import Encoder
from hybridnb.data.train_data import ParallelTable, split_validation
model, table, out, delay = sys.argv[1], sys.argv[2], Path(sys.argv[3]), float(sys.argv[4])
distributed.init()
(out / "pids").mkdir(parents=True, exist_ok=True)
(out / "pids" / str(distributed.rank())).write_text(str(os.getpid()))
if delay:  # slow each step down so the test can kill the job mid-run
    step = gradcache.plain_step
    gradcache.plain_step = lambda *a, **k: (time.sleep(delay), step(*a, **k))[1]
train_t, val_t = split_validation(ParallelTable.load(table), 0.25, seed=0)
enc = Encoder.from_pretrained(model, max_length=32)
cfg = training.TextTraining(steps=12, batch_size=8, save_every=3, val_every=4, val_batches=2, lr=1e-3,
                            strategy="hybrid", train_dtype="float32", seed=3)
training.train(enc, train_t, val_t, cfg, out / "run", show_progress=False)
distributed.cleanup()
"""


#: AdamW divides by the gradients' size: where a gradient is near zero, two summation orders' rounding gives steps
#: of up to lr apart. So the learning rates of the text test (1e-3), and width 16, GroupNorm(8, .) over 2 channels
#: per group (over 1 channel the norm cancels the stem's conv bias: its gradient is rounding noise only)
IMAGE_TEXT_CFG = dict(strategy={"mono": 0.5, "cross": 0.5}, steps=4, batch_size=8, lr=1e-3, image_lr=1e-3,
                      warmup_ratio=0.0, image_size=16, dim=16, max_length=8, image_tower_args={"width": 16, "depth": 2},
                      val_every=2, val_batches=2, save_every=2, temperature=0.1, seed=0)

IMAGE_TEXT_WORKER = """
import json, os, sys, torch
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[1])
from tiny_models import caption_table
from hybridnb.training import distributed
from hybridnb.image_text import trainer as itt
from hybridnb.models.encoders import Encoder
bert, out, cfg = sys.argv[2], sys.argv[3], itt.ImageTextTraining(**json.loads(sys.argv[4]))
distributed.init()
model = itt.build_model(cfg, Encoder.from_pretrained(bert, max_length=cfg.max_length))
result = itt.train_image_text(model, caption_table(), caption_table(12, seed=1), cfg, os.path.join(out, "run"),
                              show_progress=False)
torch.save({"weights": itt.trained_state(model), "best_step": result.best_step},
           os.path.join(out, f"rank{distributed.rank()}.pt"))
distributed.cleanup()
"""


def torchrun(script: Path, args: list, log: Path) -> subprocess.Popen:
    """`torchrun --standalone --nproc_per_node 2 script args` (standalone: a free local port)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with open(log, "w") as err:
        return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone",
                                 "--nproc_per_node", str(WORLD), str(script), *map(str, args)],
                                env=env, stdout=err, stderr=subprocess.STDOUT)


def finish(job: subprocess.Popen, log: Path) -> None:
    assert job.wait(timeout=600) == 0, log.read_text()[-5000:]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "0_Transformer" / "model.safetensors")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    table = synthetic_table()
    table.save(root / "table.json")
    shared_answers(table).save(root / "shared.json")
    return {"model": save_tiny_bert(root / "bert", dropout=0.1),
            "model_nodrop": save_tiny_bert(root / "bert_nodrop", dropout=0.0),
            "table": ParallelTable.load(root / "table.json"), "table_path": root / "table.json"}


def shared_answers(table: ParallelTable, n_answers: int = 3) -> ParallelTable:
    """`table` with item i's positive in each language replaced by answer i % n_answers: every batch then holds
    in-batch passages with a query's own answer text (false negatives)."""
    positives = {lang: [None if p is None else f"answer {i % n_answers} {lang}" for i, p in enumerate(ps)]
                 for lang, ps in table.positives.items()}
    return ParallelTable(table.ids, table.languages, table.queries, positives, table.hard_negatives)


@pytest.fixture(scope="module")
def two_ranks(tiny, tmp_path_factory):
    """The outputs of WORKER on 2 ranks."""
    out = tmp_path_factory.mktemp("two_ranks")
    (out / "worker.py").write_text(WORKER)
    log = out / "torchrun.log"
    finish(torchrun(out / "worker.py", [tiny["model_nodrop"], tiny["table_path"], out, json.dumps(STEP_CFG),
                                        json.dumps(TRAIN_CFG), json.dumps(STRATEGY), SAMPLER_STEPS], log), log)
    return out


@pytest.fixture(scope="module")
def image_text_two_ranks(tiny, tmp_path_factory):
    """The outputs of IMAGE_TEXT_WORKER on 2 ranks."""
    out = tmp_path_factory.mktemp("image_text_two_ranks")
    (out / "worker.py").write_text(IMAGE_TEXT_WORKER)
    log = out / "torchrun.log"
    finish(torchrun(out / "worker.py", [Path(__file__).parent, tiny["model_nodrop"], out,
                                        json.dumps(IMAGE_TEXT_CFG)], log), log)
    return out


# --------------------------------------------------------------------------- one process


def test_a_plain_process_is_a_world_of_one(monkeypatch, one_thread):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.init() == 1 and not distributed.is_distributed()
    assert (distributed.world_size(), distributed.rank(), distributed.is_main()) == (1, 0, True)
    t = torch.randn(3, 4, requires_grad=True)
    assert distributed.gather_with_grad(t) is t
    assert distributed.broadcast_object({"a": 1}) == {"a": 1} and distributed.all_gather_object(5) == [5]
    with distributed.main_first():
        ran = True
    assert ran
    module = torch.nn.Linear(2, 2)
    assert distributed.wrap(module) is module


def test_torchrun_environment_must_be_complete(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(RuntimeError, match="MASTER_ADDR"):
        distributed.init()
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE"):
        distributed.init()


def test_global_batch_must_split_evenly_over_the_ranks(tiny):
    with pytest.raises(ValueError, match="divisible"):
        training.check_config(training.TextTraining(batch_size=8), tiny["table"], world_size=3, rank=0)


def test_single_process_step_is_the_gradcache_module_step(tiny, one_thread):
    enc = Encoder.from_pretrained(tiny["model_nodrop"], max_length=32)
    enc.train()
    batch = training.check_config(training.TextTraining(**STEP_CFG), tiny["table"]).next_batch()
    qf, pf, nf, _ = training.trainer._features(enc, tiny["table"], batch.pairs, 1)
    loss = distributed.contrastive_step(enc, qf, pf, losses.InfoNCE(), nf)
    grads = [p.grad.clone() for p in enc.parameters()]
    enc.zero_grad(set_to_none=True)
    assert gradcache.plain_step(enc, qf, pf, losses.InfoNCE(), nf) == loss
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, enc.parameters()))


# --------------------------------------------------------------------------- two ranks


def test_two_ranks_give_the_loss_and_gradients_of_one_process(tiny, two_ranks, one_thread):
    """2 ranks x B/2 (plain, GradCache, plain in 2 length groups) == 1 process x B: InfoNCE over the gathered
    global batch."""
    table = tiny["table"]
    batch = training.check_config(training.TextTraining(**STEP_CFG), table, world_size=1, rank=0).next_batch()
    enc = Encoder.from_pretrained(tiny["model_nodrop"], max_length=32)
    enc.train()
    qf, pf, nf, _ = training.trainer._features(enc, table, batch.pairs, 1)
    ref_loss = gradcache.plain_step(enc, qf, pf, losses.InfoNCE(), nf)
    ref_grads = {k: p.grad for k, p in enc.named_parameters()}

    ranks = [torch.load(two_ranks / f"step{r}.pt", weights_only=False) for r in range(WORLD)]
    assert [r["world"] for r in ranks] == [WORLD, WORLD]
    # the shards are the halves of the global batch, in rank order
    assert torch.equal(torch.cat([r["pairs"] for r in ranks]), torch.as_tensor(batch.pairs))
    for result in ranks:
        for name in ("plain", "gradcache", "length_groups"):
            assert result[name + "_loss"] == pytest.approx(ref_loss, rel=1e-5), name
            grads = result[name + "_grads"]
            assert grads.keys() == ref_grads.keys()
            for k, g in ref_grads.items():
                torch.testing.assert_close(grads[k], g, rtol=1e-4, atol=1e-5, msg=f"{name} {k}")
    for name in ("plain", "gradcache", "length_groups"):  # the ranks end the step with identical (synchronised) grads
        for k in ref_grads:
            assert torch.equal(ranks[0][name + "_grads"][k], ranks[1][name + "_grads"][k]), (name, k)


def test_two_ranks_mask_false_negatives_like_one_process(tiny, two_ranks, one_thread):
    """mask_false_negatives under torchrun: the ranks compare the global batch's texts (by id) and get the mask,
    loss and gradients of one process with the global batch."""
    shared = ParallelTable.load(tiny["table_path"].parent / "shared.json")
    batch = training.check_config(training.TextTraining(**STEP_CFG), shared, world_size=1, rank=0).next_batch()
    enc = Encoder.from_pretrained(tiny["model_nodrop"], max_length=32)
    enc.train()
    qf, pf, nf, exclude = training.trainer._features(enc, shared, batch.pairs, 1, mask_false_negatives=True)
    assert exclude.shape == (8, 16) and exclude.any() and not exclude.diagonal().any()
    ref_loss = gradcache.plain_step(enc, qf, pf, losses.InfoNCE(exclude=exclude), nf)
    ref_grads = {k: p.grad for k, p in enc.named_parameters()}
    enc.zero_grad(set_to_none=True)
    assert gradcache.plain_step(enc, qf, pf, losses.InfoNCE(), nf) > ref_loss  # the mask changes the loss
    for r in range(WORLD):
        result = torch.load(two_ranks / f"step{r}.pt", weights_only=False)
        assert torch.equal(result["masked_exclude"], exclude)
        for name in ("masked_plain", "masked_gradcache"):
            assert result[name + "_loss"] == pytest.approx(ref_loss, rel=1e-5), name
            for k, g in ref_grads.items():
                torch.testing.assert_close(result[name + "_grads"][k], g, rtol=1e-4, atol=1e-5, msg=f"{name} {k}")


def test_ranks_draw_the_same_kinds_and_languages_and_disjoint_ids(tiny, two_ranks):
    steps = [json.loads((two_ranks / f"sampler{r}.json").read_text()) for r in range(WORLD)]
    reference = training.check_config(training.TextTraining(**{**STEP_CFG, "strategy": STRATEGY}), tiny["table"],
                                      world_size=1, rank=0)
    kinds = set()
    for a, b in zip(*steps):
        assert a[:3] == b[:3]  # step, kind, language
        assert len(a[3]) == len(b[3]) == STEP_CFG["batch_size"] // WORLD
        assert not set(a[3]) & set(b[3])
        expected = reference.next_global_batch()
        assert [expected.step, expected.kind, expected.language] == a[:3]
        assert a[3] + b[3] == reference.item_ids_of(expected)
        kinds.add(a[1])
    assert kinds == set(STRATEGY) and len(steps[0]) == SAMPLER_STEPS


@pytest.mark.parametrize("gc", [False, True], ids=["plain", "gradcache"])
def test_two_rank_training_matches_one_process(tiny, two_ranks, tmp_path, gc, one_thread):
    train_t, val_t = split_validation(tiny["table"], 0.25, seed=0)
    enc = Encoder.from_pretrained(tiny["model_nodrop"], max_length=32)
    ref = training.train(enc, train_t, val_t, training.TextTraining(**TRAIN_CFG, gradcache=gc, chunk_size=3),
                         tmp_path / "run", show_progress=False)
    out = two_ranks / f"train_gc{int(gc)}"
    log = [json.loads(line) for line in (out / training.trainer.LOG).read_text().splitlines()]
    assert [r["step"] for r in log] == [0, 1, 2]
    for mine, theirs in zip(log, ref.history):
        assert (mine["kind"], mine["language"]) == (theirs["kind"], theirs["language"])
        for key in ("loss", "grad_norm", "val_loss"):
            assert mine.get(key, 0) == pytest.approx(theirs.get(key, 0), rel=1e-4), key
    for folder in ("final", "best"):
        expected = weights(tmp_path / "run" / folder)
        for k, v in weights(out / folder).items():
            torch.testing.assert_close(v, expected[k], rtol=1e-4, atol=1e-5, msg=f"{folder} {k}")
    state = torch.load(out / training.trainer.CHECKPOINT, weights_only=False)
    assert state["step"] == 3 and len(state["rng"]) == WORLD  # every rank's RNG state


def test_two_rank_image_text_training_matches_one_process(tiny, image_text_two_ranks, tmp_path, one_thread):
    """The image-text loss spans the global batch (every rank's captions and images) and the gradients are
    averaged over the ranks: 2 ranks x B/2 train like 1 process x B, and the ranks stay identical."""
    from hybridnb.image_text import trainer as itt

    cfg = itt.ImageTextTraining(**IMAGE_TEXT_CFG)
    model = itt.build_model(cfg, Encoder.from_pretrained(tiny["model_nodrop"], max_length=cfg.max_length))
    ref = itt.train_image_text(model, caption_table(), caption_table(12, seed=1), cfg, tmp_path / "run",
                               show_progress=False)
    assert {r["kind"] for r in ref.history} == {"mono", "cross"}  # with and without the caption-caption term
    out = image_text_two_ranks
    log = [json.loads(line) for line in (out / "run" / itt.LOG).read_text().splitlines()]
    assert [r["step"] for r in log] == [0, 1, 2, 3]
    for mine, theirs in zip(log, ref.history):
        assert (mine["kind"], mine["language"], mine["text_term"]) == \
            (theirs["kind"], theirs["language"], theirs["text_term"])
        for key in ("loss", "grad_norm", "val_loss"):
            assert mine.get(key, 0) == pytest.approx(theirs.get(key, 0), rel=1e-4), key
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    expected = itt.trained_state(model)
    assert ranks[0]["weights"].keys() == expected.keys() and ranks[0]["best_step"] == ref.best_step
    for k, v in expected.items():
        torch.testing.assert_close(ranks[0]["weights"][k], v, rtol=1e-4, atol=1e-5, msg=lambda m: f"{k}: {m}")
        assert torch.equal(ranks[0]["weights"][k], ranks[1]["weights"][k]), k  # the ranks never drift apart
    state = torch.load(out / "run" / itt.CHECKPOINT, weights_only=False)
    assert state["step"] == 4 and len(state["rng"]) == WORLD  # every rank's RNG state


def _kill_job(job: subprocess.Popen, pid_dir: Path) -> None:
    pids = [int(p.read_text()) for p in pid_dir.iterdir()]
    assert len(pids) == WORLD
    job.send_signal(signal.SIGKILL)  # the agent first, so it cannot restart its workers
    assert job.wait(timeout=60) == -signal.SIGKILL
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.time() + 60
    while time.time() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in pids)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def test_killed_two_rank_run_resumes_to_the_same_weights_and_log(tiny, tmp_path):
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    args = lambda out, delay: [tiny["model"], tiny["table_path"], out, delay]  # noqa: E731
    reference = torchrun(script, args(tmp_path / "ref", 0.0), tmp_path / "ref.log")  # side by side
    killed = torchrun(script, args(tmp_path / "killed", 0.25), tmp_path / "killed.log")
    log = tmp_path / "killed" / "run" / training.trainer.LOG
    deadline = time.time() + 300
    while time.time() < deadline:  # kill once step 5 is logged (a checkpoint exists at step 3)
        if log.exists() and sum(1 for _ in log.open()) >= 5:
            break
        assert killed.poll() is None, (tmp_path / "killed.log").read_text()[-5000:]
        time.sleep(0.02)
    _kill_job(killed, tmp_path / "killed" / "pids")
    finish(reference, tmp_path / "ref.log")
    state = torch.load(tmp_path / "killed" / "run" / training.trainer.CHECKPOINT, weights_only=False)
    assert 3 <= state["step"] < 12 and not (tmp_path / "killed" / "run" / "final").exists()

    finish(torchrun(script, args(tmp_path / "killed", 0.0), tmp_path / "resumed.log"), tmp_path / "resumed.log")
    for folder in ("final", "best"):
        ref_w, res_w = weights(tmp_path / "ref" / "run" / folder), weights(tmp_path / "killed" / "run" / folder)
        assert ref_w.keys() == res_w.keys()
        for k in ref_w:
            assert torch.equal(ref_w[k], res_w[k]), (folder, k)
    strip = lambda p: [{k: v for k, v in json.loads(line).items() if k not in ("pairs_per_s", "step_s")}  # noqa: E731
                       for line in p.read_text().splitlines()]
    assert strip(tmp_path / "ref" / "run" / training.trainer.LOG) == strip(log)
    assert [r["step"] for r in strip(log)] == list(range(12))
