"""The study's training steps and evaluation encoding, with hooks for faster candidate paths (a benchmark helper).

Shared by ``bench_utilisation.py`` and ``bench_fast_paths.py``. Training runs the real loop
(:func:`hybridnb.training.loop.train_loop`, the trainer's :class:`~hybridnb.training.trainer.TextTask` step, its
optimizer and schedule) on the data a study run trains on (:func:`hybridnb.studies.runs.prepare_data` of the
profile, so the same training and validation split and the same batches for a seed), with nothing written to
disk: :class:`BenchTextTask` keeps no ``best/`` copy and the loop gets no output folder. What a candidate
changes is applied here, in the benchmark's own process, never in the library: the library's default paths stay
as they are.

A candidate is named by features joined with ``+`` (``compile+length-groups-2``); ``today`` is the study's own
path. :data:`TRAIN_FEATURES` and :data:`ENCODE_FEATURES` say what each one does.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import os
import re
import sys
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # this checkout's hybridnb, not an editable install's

import torch  # noqa: E402

TRAIN_FEATURES = {
    "today": "the study's path: eager, train_dtype as resolved (bf16 autocast where native), fused AdamW, "
             "row-wise input-embedding gradients",
    "compile": "torch.compile (inductor) of the 12 transformer layers; the input embeddings stay eager so that "
               "their row-wise gradient is kept",
    "compile-all": "torch.compile (inductor) of the whole BertModel (the row-wise embedding gradient then runs "
                   "where dynamo breaks the graph)",
    "foreach-adamw": "AdamW with foreach=True instead of the fused kernel (the same update)",
    "lazy-embedding-adamw": "AdamW as today for every weight but the 250k x 384 word embeddings, whose update, "
                            "moments and weight decay touch only the rows the batch used (SparseAdam-style; "
                            "not exact AdamW: rows not used keep their moments and are not decayed)",
    "length-groups-N": "each of the step's three forwards (queries, positives, negatives) in N length-sorted "
                       "groups, each padded to its own longest row (same loss up to dropout masks and rounding): "
                       "the library's length_groups: N",
    "one-autocast-region": "the step's three forwards in one autocast region instead of one each, so that autocast "
                           "casts each weight to bf16 once a step, not three times (the same arithmetic)",
    "joint-forward": "queries, positives and negatives through one forward, padded to a common width (one "
                     "autocast region; with length-groups-N the N groups are drawn from all the step's rows)",
    "eager-attention": "transformers' eager attention instead of the model's setting",
    "sdpa-attention": "torch's scaled_dot_product_attention (transformers' sdpa) instead of the model's setting",
    "threads-N": "torch.set_num_threads(N)",
    "omp-active": "OMP_WAIT_POLICY=ACTIVE (OpenMP threads spin between parallel regions)",
    "omp-passive": "OMP_WAIT_POLICY=PASSIVE (OpenMP threads sleep between parallel regions)",
    "jemalloc": "jemalloc preloaded (LD_PRELOAD) instead of glibc malloc",
    "tcmalloc": "tcmalloc preloaded (LD_PRELOAD) instead of glibc malloc",
    "glibc-malloc": "glibc's own mmap and trim thresholds (HYBRIDNB_MALLOC=default) instead of hybridnb.allocator's "
                    "raised ones: large blocks mapped and unmapped every step, a smaller resident set",
    "float32": "train_dtype float32 (no autocast), whatever the CPU has",
}
ENCODE_FEATURES = {
    "today": "Encoder.encode as evaluation calls it: eager, encode_dtype's autocast, length-sorted batches",
    "compile": "torch.compile (inductor) of the BertModel",
    "freeze": "torch.compile with torch._inductor.config.freezing (weights folded as constants, prepacked)",
    "bf16-weights": "the model's weights cast to bf16 (autocast then casts nothing)",
    "eager-attention": TRAIN_FEATURES["eager-attention"],
    "sdpa-attention": TRAIN_FEATURES["sdpa-attention"],
    "threads-N": TRAIN_FEATURES["threads-N"],
    "omp-active": TRAIN_FEATURES["omp-active"],
    "omp-passive": TRAIN_FEATURES["omp-passive"],
    "jemalloc": TRAIN_FEATURES["jemalloc"],
    "tcmalloc": TRAIN_FEATURES["tcmalloc"],
    "glibc-malloc": TRAIN_FEATURES["glibc-malloc"],
}
_N = re.compile(r"^(length-groups|threads)-(\d+)$")


def features(candidate: str, known: dict[str, str]) -> list[str]:
    """The candidate's features, checked against `known` (``threads-4`` matches ``threads-N``)."""
    out = []
    for f in candidate.split("+"):
        m = _N.match(f)
        generic = f"{m.group(1)}-N" if m else f
        if generic not in known or (m and int(m.group(2)) < 1):
            raise ValueError(f"unknown feature {f!r} in candidate {candidate!r}; known: {sorted(known)}")
        out.append(f)
    if "today" in out and len(out) > 1:
        raise ValueError("'today' is the study's path and takes no other feature")
    return out


def number(feats: list[str], prefix: str, default: int) -> int:
    for f in feats:
        if f.startswith(prefix + "-"):
            return int(f.rsplit("-", 1)[1])
    return default


def environment(feats: list[str]) -> dict[str, str]:
    """Environment variables a worker process must start with (OpenMP, a preloaded allocator)."""
    env = {}
    if "omp-active" in feats:
        env["OMP_WAIT_POLICY"] = "ACTIVE"
    if "omp-passive" in feats:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    if "glibc-malloc" in feats:
        env["HYBRIDNB_MALLOC"] = "default"
    for lib in ("jemalloc", "tcmalloc"):
        if lib in feats:
            path = ctypes.util.find_library(lib)
            if path is None:
                raise RuntimeError(f"{lib} is not installed here (ctypes.util.find_library found no lib{lib})")
            env["LD_PRELOAD"] = path
    return env


def apply_process_features(feats: list[str]) -> None:
    """In the worker: the thread count."""
    threads = number(feats, "threads", 0)
    if threads:
        torch.set_num_threads(threads)


def set_attention(model, feats: list[str]) -> str:
    """Switch the model's attention implementation as asked; returns the one it uses."""
    want = "eager" if "eager-attention" in feats else "sdpa" if "sdpa-attention" in feats else None
    if want:
        model.set_attn_implementation(want)
    return model.config._attn_implementation


# ----------------------------------------------------------------------------------------------- training
def study_run(profile: str, seed: int, steps: int, val_every: int, train_dtype: str | None = None,
              overrides: dict | None = None):
    """The profile's run config for `seed` with `steps` steps (`val_every` validation interval) and its data;
    `overrides` (batch size, max length: smoke tests) replace profile keys."""
    from hybridnb import config
    from hybridnb.studies import runs

    params = {**config.load_profile(profile), "profile": profile, "seed": seed, "steps": steps,
              "val_every": val_every, "save_every": 10**9}
    if train_dtype:
        params["train_dtype"] = train_dtype
    params.update({k: v for k, v in (overrides or {}).items() if v is not None})
    cfg = runs.check_run(params)
    return cfg, runs.prepare_data(cfg)


def make_task(encoder, data, cfg, feats: list[str], shapes: list | None = None):
    """A :class:`~hybridnb.training.trainer.TextTask` that writes nothing (no ``best/``), records each step's
    rows' real lengths and padded widths into `shapes` (queries, positives, negatives) and runs the step's
    forwards the candidate's way. Made lazily so that importing this module stays cheap."""
    from torch.profiler import record_function

    from hybridnb.training import distributed, trainer
    from hybridnb.training.length_groups import LengthGroups

    groups = number(feats, "length-groups", 1)

    class BenchTextTask(trainer.TextTask):
        def new_best(self, step: int) -> None:
            pass  # the study writes best/ to disk here; a benchmark keeps nothing

        def step(self, batch):
            with record_function("data: tokenise"):
                qf, pf, nf, _ = trainer._features(self.encoder, self.train_table, batch.pairs,
                                                  self.cfg.n_hard_negatives)  # the runs: no false-negative mask
            if shapes is not None:
                shapes.append([(f["attention_mask"].sum(dim=1).tolist(), int(f["attention_mask"].shape[1]))
                               for f in (qf, pf, nf) if f is not None])
            if "one-autocast-region" in feats or "joint-forward" in feats:
                model = self.model if groups == 1 else LengthGroups(self.model, groups)
                return own_plain_step(model, [f for f in (qf, pf, nf) if f is not None], self.loss_fn, self.dtype,
                                      "joint-forward" in feats, self.encoder.tokenizer.pad_token_id), {}
            # length-groups-N: the library's path (TextTraining.length_groups, hybridnb/training/length_groups.py)
            return distributed.contrastive_step(self.model, qf, pf, self.loss_fn, nf, chunk_size=self.chunk_size,
                                                autocast=self.dtype, length_groups=groups), {}

    task = BenchTextTask(encoder, data.train, data.val, None, cfg, Path(os.devnull))
    real_loss = task.loss_fn

    def loss_fn(q, p, n=None):
        with record_function("loss"):
            return real_loss(q, p, n)

    task.loss_fn = loss_fn
    return task


def pad_together(groups: list[dict[str, torch.Tensor]], pad_id: int) -> dict[str, torch.Tensor]:
    """Several right-padded feature batches as one, padded to the widest (pad id; mask and token types 0)."""
    width = max(int(f["input_ids"].shape[1]) for f in groups)
    out = {}
    for key in groups[0]:
        fill = pad_id if key == "input_ids" else 0
        out[key] = torch.cat([torch.nn.functional.pad(f[key], (0, width - f[key].shape[1]), value=fill)
                              for f in groups])
    return out


def own_plain_step(model, groups: list[dict[str, torch.Tensor]], loss_fn, dtype, joint: bool, pad_id: int) -> float:
    """:func:`hybridnb.training.gradcache.plain_step` with the forwards in one autocast region (and, `joint`, as
    one forward); the loss and backward as there."""
    from hybridnb.training import gradcache

    ctx = torch.autocast("cpu", dtype=dtype) if dtype is not None else contextlib.nullcontext()
    with ctx:
        if joint:
            emb = model(pad_together(groups, pad_id))
            reps = list(torch.split(emb, [len(f["input_ids"]) for f in groups]))
        else:
            reps = [model(f) for f in groups]
    loss = gradcache._compute_loss(loss_fn, [gradcache._to_loss_dtype(r) for r in reps])
    loss.backward()
    return float(loss.detach())


def build_optimizer(encoder, cfg, feats: list[str]) -> torch.optim.Optimizer:
    """Today's AdamW (:func:`hybridnb.training.trainer.build_optimizer`), or the candidate's."""
    from hybridnb.training import trainer

    if "foreach-adamw" in feats:
        opt = trainer.build_optimizer(encoder, cfg.lr, cfg.weight_decay)
        groups = [{k: v for k, v in g.items() if k in ("params", "weight_decay")} for g in opt.param_groups]
        return torch.optim.AdamW(groups, lr=cfg.lr, foreach=True)
    if "lazy-embedding-adamw" in feats:
        return lazy_embedding_adamw(encoder, cfg.lr, cfg.weight_decay)
    return trainer.build_optimizer(encoder, cfg.lr, cfg.weight_decay)


def lazy_embedding_adamw(encoder, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """Fused AdamW over every weight but the word embeddings, and after each of its steps a row-wise AdamW step
    of the embedding rows whose gradient is not zero (the rows the batch used), with the first group's learning
    rate (so the schedule applies), betas, eps and weight decay, and the global step count in the bias
    correction (as torch's SparseAdam). Clears the embedding's gradient itself (the optimizer does not own it)."""
    emb = encoder.model.get_input_embeddings().weight
    decay = [p for p in encoder.parameters() if p.requires_grad and p.ndim >= 2 and p is not emb]
    no_decay = [p for p in encoder.parameters() if p.requires_grad and p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr, fused=True)
    state = {"m": torch.zeros_like(emb), "v": torch.zeros_like(emb), "step": 0}

    @torch.no_grad()
    def step_embedding_rows(optimizer, args, kwargs):
        grad = emb.grad
        if grad is None:
            return
        rows = torch.any(grad != 0, dim=1).nonzero().squeeze(1) if grad.numel() else grad.new_zeros(0, dtype=torch.long)
        group = optimizer.param_groups[0]
        (b1, b2), eps, rate, wd = group["betas"], group["eps"], float(group["lr"]), group["weight_decay"]
        state["step"] += 1
        g = grad.index_select(0, rows)
        m = state["m"].index_select(0, rows).mul_(b1).add_(g, alpha=1 - b1)
        v = state["v"].index_select(0, rows).mul_(b2).addcmul_(g, g, value=1 - b2)
        state["m"].index_copy_(0, rows, m)
        state["v"].index_copy_(0, rows, v)
        p = emb.index_select(0, rows).mul_(1 - rate * wd)
        denom = (v / (1 - b2 ** state["step"])).sqrt_().add_(eps)
        p.addcdiv_(m, denom, value=-rate / (1 - b1 ** state["step"]))
        emb.index_copy_(0, rows, p)
        emb.grad = None

    opt.register_step_post_hook(step_embedding_rows)
    return opt


def prepare_training_model(encoder, feats: list[str]) -> None:
    """Compile (in place: the module keeps its name and state-dict keys) as the candidate asks."""
    if "compile" in feats:
        encoder.model.encoder.compile(backend="inductor")
    if "compile-all" in feats:
        encoder.model.compile(backend="inductor")


def train_steps(encoder, data, cfg, feats: list[str], *, shapes: list | None = None,
                on_batch: Callable[[int], None] | None = None):
    """Train `encoder` for ``cfg.steps`` steps through the real loop, the candidate's way; the loop's result
    (``history``: each step's loss, seconds, validation losses). ``on_batch(i)`` is called before step i draws
    its batch (a profiler's start and stop)."""
    from torch.profiler import record_function

    from hybridnb import allocator
    from hybridnb.training import distributed, loop, trainer

    distributed.init()
    sampler = trainer.check_config(cfg, data.train)
    allocator.tune_malloc()
    optimizer = build_optimizer(encoder, cfg, feats)
    scheduler = trainer.build_scheduler(optimizer, round(cfg.warmup_ratio * cfg.steps), cfg.steps)
    task = make_task(encoder, data, cfg, feats, shapes)
    task.val_batches = trainer.fixed_validation_batches(cfg, data.val)
    real_next, counter = sampler.next_batch, [0]

    def next_batch():
        if on_batch is not None:
            on_batch(counter[0])
        counter[0] += 1
        with record_function("data: sampler"):
            return real_next()

    sampler.next_batch = next_batch
    real_clip = torch.nn.utils.clip_grad_norm_

    def clip(*args, **kwargs):
        with record_function("gradient clipping"):
            return real_clip(*args, **kwargs)

    torch.nn.utils.clip_grad_norm_ = clip  # the loop looks it up at every step
    try:
        return loop.train_loop(task, sampler, optimizer, scheduler, cfg, None, resume=False, show_progress=False)
    finally:
        torch.nn.utils.clip_grad_norm_ = real_clip


# ----------------------------------------------------------------------------------------------- encoding
def prepare_encoding_model(encoder, feats: list[str]) -> None:
    if "bf16-weights" in feats:
        encoder.model.to(torch.bfloat16)
    if "freeze" in feats:
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
    if "compile" in feats or "freeze" in feats:
        encoder.model.compile(backend="inductor")


def encode_batches(encoder, texts, kind: str, batch_size: int) -> list[list[int]]:
    """The real lengths of the rows of each batch :meth:`Encoder.encode` forms (length-sorted, longest first)."""
    import numpy as np

    rows = encoder.token_rows(texts, kind)
    lengths = np.array([len(r) for r in rows["input_ids"]])
    order = np.argsort(-lengths, kind="stable")
    return [lengths[order[i:i + batch_size]].tolist() for i in range(0, len(order), batch_size)]


@contextlib.contextmanager
def quiet_compile_logs():
    """Inductor's warnings (one per recompile) would drown the workers' output."""
    import logging

    level = logging.getLogger("torch._dynamo").level
    logging.getLogger("torch._dynamo").setLevel(logging.ERROR)
    try:
        yield
    finally:
        logging.getLogger("torch._dynamo").setLevel(level)


def run_worker(worker, args) -> int:
    """A benchmark's worker process: run `worker(args)`, add the process's peak RSS, print one ``RESULT`` JSON line
    (what the parent parses)."""
    import json
    import resource

    with quiet_compile_logs():
        res = worker(args)
    res["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(res))
    return 0
