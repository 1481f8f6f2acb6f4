"""The contrastive trainer: a shared-weight dual encoder, InfoNCE, hybrid batches, exact resume.

One step: the sampler (:mod:`hybridnb.training.sampling`) picks the batch kind and the (item, query language,
passage language) triples; :func:`hybridnb.data.train_data.collate` turns them into texts; the encoder embeds
queries, positives and hard negatives (plainly, or with GradCache so a large batch fits a small GPU); the
InfoNCE loss with in-batch and hard negatives is back-propagated; gradients are clipped; AdamW with linear
warm-up and decay steps (the paper: lr 3e-5, weight decay 0.01).

The steps, validation, checkpoints and resume are the loop every modality shares
(:func:`hybridnb.training.loop.train_loop`); this module brings the text parts (:class:`TextTask`): the
InfoNCE step, the validation scores, and ``best/``. Checkpoints (every ``save_every`` steps and at the end)
hold the model, optimizer, scheduler, sampler and every RNG state, written atomically, so a killed run
resumes where its last checkpoint was and ends with the same weights as an uninterrupted run. The encoder
with the lowest validation loss is kept in ``best/`` (the paper early-stops on validation loss), the last
one in ``final/``; both load with ``SentenceTransformer(path)`` and ``Encoder.from_pretrained(path)``.

Under torchrun the same loop runs on every rank (:mod:`hybridnb.training.distributed`): DDP, each rank embeds its
shard of the global batch, the loss spans the global batch (same loss and gradients as one process), and
rank 0 alone validates and writes; the checkpoint holds every rank's RNG state.

    encoder = Encoder.from_pretrained(OFFLINE_E5, max_length=128)
    result = train(encoder, train_table, val_table, TextTraining(strategy="hybrid", steps=200), "cache/runs/x")
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from hybridnb import allocator, config
from hybridnb.training import checkpoints, distributed, embedding_grads, loop, losses, sampling
from hybridnb.training.length_groups import LengthGroups
from hybridnb.data.train_data import ParallelTable, collate, false_negative_mask, text_ids
from hybridnb.models import precision

__all__ = ["TextTraining", "TrainResult", "check_config", "build_optimizer", "build_scheduler",
           "TextTask", "train", "validation_loss", "validation_scores", "VALIDATION_SEED"]

TextTraining = config.TextTraining  # the settings train() takes: defaults, units and bounds in hybridnb.config
CHECKPOINT, LOG = loop.CHECKPOINT, loop.LOG  # checkpoint.pt, train_log.jsonl in the run's folder


@dataclass
class TrainResult:
    final_dir: Path
    best_dir: Path
    best_step: int
    best_val_loss: float
    log_path: Path
    history: list[dict]
    seconds: dict[str, float] = field(default_factory=dict)  # outside the steps: validate_s, best_s, checkpoint_s,
                                                             # final_s (final/ written)


def check_config(cfg: TextTraining, table: ParallelTable, world_size: int | None = None,
                 rank: int | None = None) -> sampling.HybridBatchSampler:
    """Check the settings against the data and the processes before training starts; returns this rank's sampler
    (raises ValueError). Each setting was checked on its own when `cfg` was made.

    `world_size` and `rank` default to the process group's (1 and 0 in a plain process); the batch size
    is global and must be divisible by the world size.
    """
    distributed.check_global_batch(cfg.batch_size)
    counts = table.hard_negative_counts()[table.available()]
    if cfg.n_hard_negatives and (counts < cfg.n_hard_negatives).any():
        raise ValueError(f"n_hard_negatives={cfg.n_hard_negatives} but some items have only "
                         f"{int(counts.min())} hard negative(s)")
    # the sampler checks strategy, alpha, language sampling and batch size against the data
    return sampling.HybridBatchSampler(table.available(), table.languages, cfg.batch_size, cfg.strategy,
                                       cfg.alpha, cfg.language_sampling, seed=cfg.seed, item_ids=table.ids,
                                       world_size=distributed.world_size() if world_size is None else world_size,
                                       rank=distributed.rank() if rank is None else rank)


def autocast_dtype(train_dtype: str, device: torch.device) -> torch.dtype | None:
    if train_dtype == "auto":  # on an AVX2-only CPU bf16 is emulated and ~6x slower: float32 there
        return torch.bfloat16 if precision.native_bf16(device) else None
    return torch.bfloat16 if train_dtype == "bfloat16" else None


def build_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW; biases and LayerNorm weights are not decayed (the BERT recipe).

    The fused kernel (one pass over all parameters, CPU and CUDA) computes the same update as the
    default per-tensor loop; with E5's 96M-parameter embedding matrix the loop is a visible share of a
    CPU step.
    """
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype in (torch.float32, torch.bfloat16, torch.float16)
                for p in decay + no_decay)
    return torch.optim.AdamW(groups, lr=lr, fused=fused or None)


def build_scheduler(optimizer, warmup_steps: int, total_steps: int):
    from transformers import get_linear_schedule_with_warmup

    return get_linear_schedule_with_warmup(optimizer, warmup_steps, total_steps)


def _features(encoder, table: ParallelTable, pairs: np.ndarray, n_neg: int, mask_false_negatives: bool = False):
    """Tokenised queries, positives and hard negatives of a batch (this rank's shard), and the loss's ``exclude``
    mask over the global batch when `mask_false_negatives` (else None): in-batch passages with the text of a
    query's own answer (:func:`hybridnb.data.train_data.false_negative_mask`), compared across ranks by id."""
    queries, positives, negatives = collate(table, pairs, n_neg)
    qf, pf = encoder.tokenize(queries, "query"), encoder.tokenize(positives, "passage")
    nf = encoder.tokenize(negatives, "passage") if negatives else None
    exclude = None
    if mask_false_negatives:
        pos, neg = (distributed.gather_ids(text_ids(texts)) for texts in (positives, negatives))
        exclude = torch.from_numpy(false_negative_mask(pos, neg))
    return qf, pf, nf, exclude


#: the validation batches are drawn with this seed whatever the run's seed, so every seed of a strategy is
#: validated on the same batches (the held-out items are fixed too, by the caller's split)
VALIDATION_SEED = 1


def fixed_validation_batches(cfg: TextTraining, val_table: ParallelTable) -> list[np.ndarray]:
    """`val_batches` batches drawn once from the validation table with the training strategy.

    The batch is the training batch size, or smaller when the split is too small for it (e.g. a mono batch
    needs that many items in its rarest language); validation losses within a run stay comparable.
    """
    for size in range(min(cfg.batch_size, len(val_table)), 1, -1):
        try:
            sampler = sampling.HybridBatchSampler(val_table.available(), val_table.languages, size, cfg.strategy,
                                                  cfg.alpha, cfg.language_sampling, seed=VALIDATION_SEED)
        except ValueError:
            continue
        return [b.pairs for b in sampler.take(cfg.val_batches)]
    raise ValueError(f"the validation split ({val_table}) is too small for even 2-pair {cfg.strategy} batches; "
                     "raise val_fraction")


@torch.no_grad()
def validation_scores(encoder, val_table: ParallelTable, batches: list[np.ndarray], cfg: TextTraining) -> dict:
    """Mean InfoNCE over the fixed validation batches, in eval mode (no dropout), and two ranking scores.

    ``loss`` depends on the temperature; ``top1`` (share of queries whose positive outranks every in-batch
    and hard negative) and ``mrr`` (mean reciprocal rank of the positive) do not, so they compare runs
    trained at different temperatures on the same held-out items.
    """
    was_training = encoder.training
    encoder.eval()
    dtype = autocast_dtype(cfg.train_dtype, encoder.device)
    # in eval mode length groups are the same function to rounding: a run that trains in groups validates in them
    encode = encoder if cfg.length_groups == 1 else LengthGroups(encoder, cfg.length_groups)
    total, top1, rr, n_queries = 0.0, 0.0, 0.0, 0
    try:
        for pairs in batches:
            qf, pf, nf, exclude = _features(encoder, val_table, pairs, cfg.n_hard_negatives, cfg.mask_false_negatives)
            with torch.autocast(encoder.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                q, p = encode(qf), encode(pf)
                n = encode(nf) if nf is not None else None
            q, p, n = q.float(), p.float(), None if n is None else n.float()
            total += float(losses.info_nce(q, p, n, temperature=cfg.temperature, exclude=exclude))
            scores = q @ (p if n is None else torch.cat([p, n])).T          # (B, B + B*h)
            if exclude is not None:  # a passage with the query's own answer text does not outrank it
                scores = scores.masked_fill(exclude, float("-inf"))
            positive = scores.diagonal()                                     # query i's own passage
            rank = 1 + (scores > positive[:, None]).sum(dim=1)               # ties count in the positive's favour
            top1 += float((rank == 1).sum())
            rr += float((1.0 / rank).sum())
            n_queries += len(pairs)
    finally:
        encoder.train(was_training)
    return {"loss": total / len(batches), "top1": top1 / n_queries, "mrr": rr / n_queries}


def validation_loss(encoder, val_table: ParallelTable, batches: list[np.ndarray], cfg: TextTraining) -> float:
    """Mean InfoNCE over the fixed validation batches (:func:`validation_scores`' ``loss``)."""
    return validation_scores(encoder, val_table, batches, cfg)["loss"]


class TextTask:
    """The text modality of :func:`hybridnb.training.loop.train_loop`: the dual encoder's InfoNCE step (plain or
    GradCache, under DDP when distributed), validation on the fixed batches, ``best/`` on disk."""

    lr_names = {"lr": 0}

    def __init__(self, encoder, train_table: ParallelTable, val_table: ParallelTable, val_batches: list[np.ndarray],
                 cfg: TextTraining, out_dir: Path):
        self.encoder = self.module = encoder
        self.params = list(encoder.parameters())
        self.train_table, self.val_table, self.val_batches, self.cfg, self.out_dir = \
            train_table, val_table, val_batches, cfg, out_dir
        self.config = cfg.stored()
        self.loss_fn = losses.InfoNCE(temperature=cfg.temperature)
        self.dtype = autocast_dtype(cfg.train_dtype, encoder.device)
        self.chunk_size = cfg.chunk_size if cfg.gradcache else None
        self.model = None  # the encoder, in DDP when distributed: made in steps(), after the resume

    @contextlib.contextmanager
    def steps(self):
        self.model = distributed.wrap(self.encoder)  # DDP when distributed (after the resume: it broadcasts rank 0's weights)
        try:
            # the input embedding's gradient row-wise (bit-identical, no 384 MB fill per backward); not under DDP
            with embedding_grads.row_grads(self.encoder.model, enabled=not distributed.is_distributed()):
                yield
        finally:
            self.model = None  # the DDP wrapper and its gradient buckets, if distributed

    def step(self, batch) -> tuple[float, dict]:
        qf, pf, nf, exclude = _features(self.encoder, self.train_table, batch.pairs, self.cfg.n_hard_negatives,
                                        self.cfg.mask_false_negatives)
        loss_fn = self.loss_fn if exclude is None else dataclasses.replace(self.loss_fn, exclude=exclude)
        # length_groups > 1: each forward on fewer pad tokens, the loss on the whole batch (training/length_groups.py)
        return distributed.contrastive_step(self.model, qf, pf, loss_fn, nf, chunk_size=self.chunk_size,
                                            autocast=self.dtype, length_groups=self.cfg.length_groups), {}

    def validate(self) -> dict[str, float]:
        val = validation_scores(self.encoder, self.val_table, self.val_batches, self.cfg)
        return {"val_loss": val["loss"], "val_top1": val["top1"], "val_mrr": val["mrr"]}

    def new_best(self, step: int) -> None:
        if distributed.is_main():
            checkpoints.save_encoder(self.encoder, self.out_dir / "best",
                                     _model_card_training(self.cfg, f"best validation loss, step {step}"))

    def state_dict(self) -> dict:
        return self.encoder.model.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.encoder.model.load_state_dict(state)


def train(encoder, train_table: ParallelTable, val_table: ParallelTable, cfg: TextTraining,
          out_dir: str | os.PathLike, resume: bool = True, show_progress: bool = True) -> TrainResult:
    """Train `encoder` in place; checkpoints, log and encoders go to `out_dir`. Resumes if it can.

    Under torchrun every rank calls this with the same arguments (:mod:`hybridnb.training.distributed`): the
    encoder is wrapped in DDP, each rank embeds its shard of the global batch, and only rank 0 validates,
    writes the log, checkpoints and encoders (`out_dir` must be on a filesystem all ranks share).
    """
    distributed.init()
    sampler = check_config(cfg, train_table)
    allocator.tune_malloc()
    val_batches = fixed_validation_batches(cfg, val_table)
    main = distributed.is_main()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    distributed.check_device(encoder.device)
    optimizer = build_optimizer(encoder, cfg.lr, cfg.weight_decay)
    scheduler = build_scheduler(optimizer, round(cfg.warmup_ratio * cfg.steps), cfg.steps)
    if main:  # a full disk found now, not as a torn save after an hour of training
        weights = checkpoints.state_bytes(list(encoder.model.parameters()))
        # a checkpoint written beside the previous one (weights + AdamW's two moments: 3x), best/ beside its
        # previous copy while it is swapped in, final/: about 5x the weights at the peak
        checkpoints.check_free_disk(out_dir, 5 * weights, "the run's checkpoint and encoders")

    task = TextTask(encoder, train_table, val_table, val_batches, cfg, out_dir)
    run = loop.train_loop(task, sampler, optimizer, scheduler, cfg, out_dir, resume, show_progress,
                          desc=f"train {cfg.strategy}")
    del optimizer, scheduler, task
    allocator.release_memory()
    encoder.eval()
    t0 = time.perf_counter()
    if main and (not (out_dir / "final").exists() or run.start < cfg.steps):
        checkpoints.save_encoder(encoder, out_dir / "final", _model_card_training(cfg, f"last step ({cfg.steps})"))
        if run.best_step == cfg.steps:  # final/ holds best/'s weights: one copy on disk, not two
            checkpoints.link_identical(out_dir / "final", out_dir / "best")
    distributed.barrier()  # no rank returns before final/ is written
    return TrainResult(out_dir / "final", out_dir / "best", run.best_step, run.best_val_loss, run.log_path,
                       run.history, {**run.seconds, "final_s": time.perf_counter() - t0})


def _model_card_training(cfg: TextTraining, checkpoint: str) -> dict:
    """The training lines of a saved encoder's model card."""
    return {"method": "hybridnb batch-composition training (InfoNCE, in-batch and hard negatives)",
            "strategy": cfg.strategy if isinstance(cfg.strategy, str) else dict(cfg.strategy),
            "alpha (hybrid: share of mono batches)": cfg.alpha, "steps": cfg.steps,
            "batch size (pairs)": cfg.batch_size, "learning rate": cfg.lr, "temperature": cfg.temperature,
            "hard negatives per pair": cfg.n_hard_negatives, "seed": cfg.seed, "this checkpoint": checkpoint}
