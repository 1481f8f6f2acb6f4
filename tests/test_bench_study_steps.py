"""benchmarks/study_steps.py's candidate paths on tiny modules: what each one changes, and what it must not."""

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_utilisation  # noqa: E402
import study_steps  # noqa: E402


def test_candidate_names_are_checked():
    assert study_steps.features("compile+length-groups-2", study_steps.TRAIN_FEATURES) == ["compile", "length-groups-2"]
    assert study_steps.number(["threads-3"], "threads", 0) == 3
    for bad in ("bogus", "today+compile", "threads-0", "freeze"):
        with pytest.raises(ValueError):
            study_steps.features(bad, study_steps.TRAIN_FEATURES)
    assert study_steps.features("freeze+bf16-weights", study_steps.ENCODE_FEATURES) == ["freeze", "bf16-weights"]
    assert study_steps.environment(["omp-passive"]) == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert study_steps.environment(["glibc-malloc"]) == {"HYBRIDNB_MALLOC": "default"}  # allocator.tune_malloc reads it


class MeanEmbedder(torch.nn.Module):
    """Mean of token embeddings over the mask: padding-free results, so a path that only re-pads must agree."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(30, 8)
        self.widths = []

    def forward(self, features):
        self.widths.append(int(features["input_ids"].shape[1]))
        m = features["attention_mask"].unsqueeze(-1).float()
        return (self.emb(features["input_ids"]) * m).sum(1) / m.sum(1)


def _batch(lengths, width=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    width = width or max(lengths)
    ids = torch.full((len(lengths), width), 1)
    mask = torch.zeros((len(lengths), width), dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(3, 30, (n,), generator=g)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask}


def test_pad_together_right_pads_to_the_widest():
    a, b = _batch([2, 3]), _batch([5], seed=1)
    joint = study_steps.pad_together([a, b], pad_id=1)
    assert joint["input_ids"].shape == (3, 5)
    assert joint["attention_mask"].sum().item() == 10
    assert (joint["input_ids"][:2, 3:] == 1).all()


def _grads(model):
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("joint", [False, True])
def test_own_plain_step_is_the_plain_step(joint):
    from hybridnb.training import gradcache, losses

    loss_fn = losses.InfoNCE(temperature=0.05)
    groups = [_batch([3, 5, 2]), _batch([6, 4, 7], seed=1), _batch([2, 8, 3], seed=2)]
    ref_model, model = MeanEmbedder(), MeanEmbedder()
    ref = gradcache.plain_step(ref_model, groups[0], groups[1], loss_fn, groups[2])
    got = study_steps.own_plain_step(model, groups, loss_fn, None, joint, pad_id=1)
    assert got == pytest.approx(ref, abs=1e-6)
    for a, b in zip(_grads(model), _grads(ref_model)):
        if joint:
            torch.testing.assert_close(a, b)
        else:
            assert torch.equal(a, b)  # the same forwards, the same order: bit for bit


class FakeEncoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.model = torch.nn.Module()
        self.model.word = torch.nn.Embedding(6, 4)
        self.model.get_input_embeddings = lambda: self.model.word
        self.model.dense = torch.nn.Linear(4, 4)


def test_lazy_embedding_adamw_steps_used_rows_as_adamw_and_leaves_the_rest():
    torch.manual_seed(0)
    enc, ref = FakeEncoder(), FakeEncoder()
    ref.load_state_dict(enc.state_dict())
    before = enc.model.word.weight.detach().clone()
    opt = study_steps.lazy_embedding_adamw(enc, lr=0.1, weight_decay=0.01)
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=0.1, weight_decay=0.01)
    grad = torch.zeros(6, 4)
    grad[[1, 3]] = torch.randn(2, 4)
    for e in (enc, ref):
        e.model.word.weight.grad = grad.clone()
        for p in e.model.dense.parameters():
            p.grad = torch.ones_like(p)
    opt.step()
    ref_opt.step()
    w, w_ref = enc.model.word.weight.detach(), ref.model.word.weight.detach()
    torch.testing.assert_close(w[[1, 3]], w_ref[[1, 3]])                 # used rows: AdamW's first step
    assert torch.equal(w[[0, 2, 4, 5]], before[[0, 2, 4, 5]])           # unused rows: untouched (no decay)
    assert not torch.equal(w_ref[[0, 2, 4, 5]], before[[0, 2, 4, 5]])   # (AdamW decays them)
    assert enc.model.word.weight.grad is None
    torch.testing.assert_close(enc.model.dense.weight, ref.model.dense.weight)


@pytest.mark.parametrize("name, ancestors, category", [
    ("aten::addmm", ["aten::linear"], "linear matmuls"),
    ("aten::mm", ["autograd::engine::evaluate_function: AddmmBackward0"], "linear matmuls"),
    ("aten::bmm", ["aten::_scaled_dot_product_attention_math"], "attention"),
    ("aten::mul", ["autograd::engine::evaluate_function: BmmBackward0"], "attention"),
    ("aten::_log_softmax", ["aten::cross_entropy_loss", "loss"], "loss"),
    ("aten::index_add_", ["autograd::engine::evaluate_function: _EmbeddingRowsBackward"],
     "embedding (lookup and gradient)"),
    ("aten::_fused_adamw_", ["Optimizer.step#AdamW.step"], "optimiser (AdamW, zero_grad)"),
    ("aten::_to_copy", ["aten::to"], "dtype casts (autocast)"),
    ("aten::native_layer_norm", ["aten::layer_norm"], "other"),
    ("data: tokenise", [], "data (sampling, tokenising)"),
])
def test_profile_categories(name, ancestors, category):
    assert bench_utilisation.categorise(name, ancestors) == category


def test_fast_paths_report_from_worker_results(monkeypatch, tmp_path):
    """bench_fast_paths' training table from its workers' results (faked here: the real ones train the study run):
    end-to-end speed-ups, the loss difference to today's run of the same seed, validation points inside today's
    seed spread, peak memory, and the command that made it."""
    import bench_fast_paths

    def worker(args, part, candidate, seed):
        step = {"today": 3.0, "length-groups-2": 2.0}[candidate]
        shift = 0.0 if candidate == "today" else 0.005
        return {"step_s": [step] * 4, "loss": [1.0 + shift, 0.9, 0.8, 0.7], "wall_s": 4 * step,
                "val": [(2, 1.0 + 0.02 * seed + shift), (4, 0.8 + 0.02 * seed + 0.5 * shift)],
                "attn_implementation": "sdpa", "train_dtype": "bfloat16", "batch_size": 32, "torch_threads": 2,
                "max_rss_mb": 9000.0 if candidate == "today" else 6500.0}

    monkeypatch.setattr(bench_fast_paths, "run_worker", worker)
    out = tmp_path / "fp.json"
    argv = ["--parts", "train", "--seeds", "0", "1", "--candidates", "today", "length-groups-2", "--steps", "4",
            "--warmup", "1", "--out", str(out)]
    assert bench_fast_paths.main(argv) == 0
    doc = json.loads(out.read_text())
    rows = {r["candidate"]: r for r in doc["train"]["rows"]}
    assert rows["length-groups-2"]["speedup_end_to_end"] == pytest.approx(1.5)
    assert rows["length-groups-2"]["max_abs_loss_diff"] == pytest.approx(0.005)
    assert rows["length-groups-2"]["val_points_inside_today_spread"] == 2 and rows["today"]["max_rss_mb"] == 9000
    md = out.with_suffix(".md").read_text()
    assert "python benchmarks/bench_fast_paths.py --parts train --seeds 0 1" in md
    assert "| length-groups-2 | 16.00 | 1.50 |" in md and "6500" in md
