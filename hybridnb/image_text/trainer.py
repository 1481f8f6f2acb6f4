"""The image-text parts of the training loop for the image-text dual encoder
(:class:`hybridnb.image_text.model.ImageTextModel`) with hybrid batches.

The steps, validation, checkpoints, exact resume and torchrun are the loop the text runs use
(:func:`hybridnb.training.loop.train_loop`); this module brings the image-text parts (:class:`ImageTextTask`).
One step: :class:`hybridnb.training.sampling.HybridBatchSampler` (over ``table.available()``, unchanged) draws the
batch kind and the ``(item, query language, passage language)`` triples; :func:`hybridnb.image_text.model.collate_image_text`
turns them into captions, images and, for cross batches, parallel captions; :func:`hybridnb.image_text.model.batch_loss`
(symmetric image-text InfoNCE + ``text_weight`` x caption-caption InfoNCE on cross batches) is back-propagated;
gradients are clipped; AdamW (:func:`hybridnb.training.trainer.build_optimizer`: no decay on biases / norms) steps with
two learning rates, ``lr`` for the pre-trained text tower and a higher ``image_lr`` for the image tower and the
two projections (trained from scratch), both with linear warm-up and decay (:func:`training.trainer.build_scheduler`).

Validation: ``val_batches`` fixed batches drawn once from the validation table with the training strategy
(:func:`hybridnb.training.trainer.fixed_validation_batches`: the same kinds and items at every validation), every
``val_every`` steps and at the end; the weights with the lowest validation loss are restored at the end.

Deterministic for a seed on CPU (sampler, dropout and, via :func:`build_model`, the initial weights). With an
output folder a checkpoint every ``save_every`` steps holds the trained weights, the best ones so far, the
optimizer, scheduler, sampler and RNG states: a killed run resumes from it and ends with the same weights and
log as an uninterrupted run.

    cfg = ImageTextTraining(strategy="hybrid", steps=200)
    model = build_model(cfg)
    result = train_image_text(model, tables["train"], tables["validation"], cfg, out_dir="cache/runs/x")
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from hybridnb import allocator, config, training
from hybridnb.training import checkpoints, distributed, embedding_grads, loop, sampling
from hybridnb.image_text.model import (ImageTextModel, batch_embeddings, batch_loss, collate_image_text,
                                      image_text_loss)
from hybridnb.image_text.caption_table import ImageTextTable
from hybridnb.image_text.text_features import FrozenTextLayers
from hybridnb.image_text.towers import FROZEN_TOWERS, build_image_tower

__all__ = ["ImageTextTraining", "ImageTextTrainResult", "check_config", "build_model",
           "build_image_optimizer", "validation_loss", "prepare_inputs", "trained_state", "ImageTextTask",
           "train_image_text"]

LOG, CHECKPOINT = loop.LOG, loop.CHECKPOINT  # in the output folder
PIXEL_TOWERS = ("cnn", "vit")  # trained from scratch at ``image_size``
SIZED_TOWERS = PIXEL_TOWERS + FROZEN_TOWERS  # the towers that read ``image_size``
ImageTextTraining = config.ImageTextTraining  # the settings train_image_text() takes (hybridnb.config: defaults, units)


@dataclass
class ImageTextTrainResult:
    history: list[dict]
    best_step: int
    best_val_loss: float
    log_path: Path | None
    text_states_s: float = 0.0  # reading (or computing once) the frozen text layers' states of train + validation
    image_features_s: float = 0.0  # a frozen image tower's features of train + validation (memo hits once prepared)
    seconds: dict[str, float] = field(default_factory=dict)  # the loop's time outside the steps (validate_s, ...)


def _languages(cfg: ImageTextTraining, table: ImageTextTable, what: str) -> ImageTextTable:
    if cfg.train_languages is None or list(cfg.train_languages) == table.languages:
        return table
    unknown = [g for g in cfg.train_languages if g not in table.languages]
    if unknown:
        raise ValueError(f"language(s) {unknown} are not in the {what} table ({table.languages})")
    return table.select_languages(cfg.train_languages)


def _check_image_size(cfg: ImageTextTraining) -> None:
    if cfg.image_tower in SIZED_TOWERS and cfg.image_size is None:
        raise ValueError(f"image_size must be an int >= 8 for the {cfg.image_tower} image tower, got None")


def check_config(cfg: ImageTextTraining, table: ImageTextTable) -> sampling.HybridBatchSampler:
    """Check the settings against the training `table` and the processes before any work; returns this rank's
    batch sampler. Each setting was checked on its own when `cfg` was made.

    Raises ValueError for an unknown strategy, a language not in the table, a batch larger than the items (or
    than a pool a batch kind draws from), or not divisible by the processes.
    """
    distributed.check_global_batch(cfg.batch_size)  # under torchrun: each rank embeds its share
    _check_image_size(cfg)
    table = _languages(cfg, table, "training")
    if cfg.batch_size > len(table):
        raise ValueError(f"batch_size {cfg.batch_size} exceeds the {len(table)} items of the training table")
    return sampling.HybridBatchSampler(table.available(), table.languages, cfg.batch_size, cfg.strategy, cfg.alpha,
                                       cfg.language_sampling, seed=cfg.seed, item_ids=table.ids,
                                       world_size=distributed.world_size(), rank=distributed.rank())


def build_model(cfg: ImageTextTraining, text_encoder=None) -> ImageTextModel:
    """Text encoder (``cfg.model``, or the one given) + the image tower, with projections seeded by ``cfg.seed``."""
    _check_image_size(cfg)
    if text_encoder is None:
        from hybridnb.models.encoders import Encoder

        text_encoder = Encoder.from_pretrained(cfg.model, max_length=cfg.max_length)
    kwargs = dict(cfg.image_tower_args)
    if cfg.image_tower in SIZED_TOWERS:
        kwargs.setdefault("image_size", cfg.image_size)
    if cfg.freeze_embeddings:
        text_model = getattr(text_encoder, "model", text_encoder)
        text_model.get_input_embeddings().weight.requires_grad_(False)
    torch.manual_seed(cfg.seed)
    model = ImageTextModel(text_encoder, build_image_tower(cfg.image_tower, **kwargs), dim=cfg.dim)
    if cfg.frozen_text_layers:
        model.frozen_text = FrozenTextLayers(text_encoder, cfg.frozen_text_layers, role=model.caption_role,
                                             length_groups=cfg.length_groups)
    return model


def build_image_optimizer(model: ImageTextModel, cfg: ImageTextTraining) -> torch.optim.AdamW:
    """AdamW: the text tower at ``lr`` (:func:`training.trainer.build_optimizer`), image tower + projections at
    ``image_lr``; biases and norm weights are not decayed."""
    optimizer = training.trainer.build_optimizer(model.text_encoder, cfg.lr, cfg.weight_decay)
    text = {id(p) for p in model.text_encoder.parameters()}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in text]
    for decay in (True, False):
        group = [p for p in rest if (p.ndim >= 2) == decay]
        if group:
            optimizer.add_param_group({"params": group, "lr": cfg.image_lr,
                                       "weight_decay": cfg.weight_decay if decay else 0.0})
    return optimizer


@torch.no_grad()
def validation_loss(model: ImageTextModel, table: ImageTextTable, batches, cfg: ImageTextTraining) -> float:
    """Mean loss over the fixed validation batches, in eval mode (no dropout)."""
    was_training = model.training
    model.eval()
    dtype = training.trainer.autocast_dtype(cfg.train_dtype, model.device)
    try:
        total = 0.0
        for pairs in batches:
            batch = collate_image_text(table, pairs, tower=model.image_tower)
            with torch.autocast(model.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                total += float(batch_loss(model, batch, cfg.temperature, cfg.text_weight))
    finally:
        model.train(was_training)
    return total / len(batches)


def trained_state(model: torch.nn.Module, copy: bool = True) -> dict[str, torch.Tensor]:
    """A copy of what training changes: the trainable parameters and the buffers. The frozen weights are left
    out (copying E5's frozen 96M-parameter word embedding at every new best validation loss cost ~0.3 s each).
    ``copy=False``: the tensors themselves (for a checkpoint written at once)."""
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    return {k: v.detach().clone() if copy else v for k, v in model.state_dict().items() if k not in frozen}


def prepare_inputs(model: ImageTextModel, train_table: ImageTextTable, val_table: ImageTextTable,
                   cfg: ImageTextTraining) -> tuple[ImageTextTable, ImageTextTable, float, float]:
    """The training and validation tables in ``cfg.train_languages``, with what the frozen parts need read from their
    caches (or computed once and cached): a frozen image tower's features, the frozen text layers' states.

    Returns (train table, validation table, seconds on image features, seconds on text states). Called by
    :func:`train_image_text` before step 0, and by :func:`hybridnb.image_text.runs.warm_caches` so that runs
    trained in parallel processes only read the caches."""
    given = (train_table, val_table)
    train_table, val_table = _languages(cfg, train_table, "training"), _languages(cfg, val_table, "validation")
    t0 = time.perf_counter()
    if hasattr(model.image_tower, "prepare"):  # a frozen tower: a language selection that kept every item
        for table, parent in zip((train_table, val_table), given):  # shares the given table's features
            model.image_tower.prepare(table, parent)
    image_features_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for table in (train_table, val_table):  # the frozen text layers' states
        model.prepare_texts(table.caption_rows()[0])
    return train_table, val_table, image_features_s, time.perf_counter() - t0


class ImageTextTask:
    """The image-text modality of :func:`hybridnb.training.loop.train_loop`: the image-caption (+ caption-caption)
    InfoNCE step, validation on the fixed batches, the best weights kept in memory (and in the checkpoint).

    Distributed, each rank embeds its shard of the global batch and the loss spans the global batch (the
    embeddings of every rank gathered, as for text): the gradients are all-reduced from ``.grad`` after the
    backward, which gives the one-process gradients of the global batch."""

    lr_names = {"lr": 0, "image_lr": -1}  # the text tower's, the image tower's and projections'

    def __init__(self, model: ImageTextModel, train_table: ImageTextTable, val_table: ImageTextTable, val_batches,
                 cfg: ImageTextTraining, params: list[torch.nn.Parameter]):
        self.module, self.params = model, params
        self.train_table, self.val_table, self.val_batches, self.cfg = train_table, val_table, val_batches, cfg
        self.config = cfg.stored()
        self.dtype = training.trainer.autocast_dtype(cfg.train_dtype, model.device)
        self.loss_fn = functools.partial(image_text_loss, temperature=cfg.temperature, text_weight=cfg.text_weight)
        self.best_state = None

    def steps(self):
        text_model = getattr(self.module.text_encoder, "model", self.module.text_encoder)
        # the text embedding's gradient row-wise (bit-identical, no 384 MB fill per step); not distributed: the
        # all-reduce fills every row of .grad, which the row-wise buffer would not zero before the next step
        return embedding_grads.row_grads(text_model, enabled=not distributed.is_distributed())

    def step(self, drawn) -> tuple[float, dict]:
        model, world = self.module, distributed.world_size()
        batch = collate_image_text(self.train_table, drawn.pairs, tower=model.image_tower)
        with torch.autocast(model.device.type, dtype=self.dtype or torch.bfloat16, enabled=self.dtype is not None):
            # batch_loss over the global batch (every rank's embeddings), times W: the all-reduce below averages
            # the ranks' gradients (in one process: this batch's loss, times 1)
            loss = distributed.GlobalLoss(self.loss_fn, float(world))(*batch_embeddings(model, batch))
        loss.backward()
        distributed.all_reduce_grads(self.params)  # nothing in one process
        return loss.item() / world, {"text_term": batch.parallel_captions is not None}

    def validate(self) -> dict[str, float]:
        return {"val_loss": validation_loss(self.module, self.val_table, self.val_batches, self.cfg)}

    def new_best(self, step: int) -> None:
        self.best_state = trained_state(self.module)

    def state_dict(self) -> dict:
        return {"trained": trained_state(self.module, copy=False), "best": self.best_state}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["trained"], strict=False)  # the frozen weights never left
        self.best_state = state["best"]


def train_image_text(model: ImageTextModel, train_table: ImageTextTable, val_table: ImageTextTable,
                     cfg: ImageTextTraining, out_dir: str | os.PathLike | None = None,
                     show_progress: bool = True, resume: bool = True) -> ImageTextTrainResult:
    """Train `model` in place and leave it with the weights of the lowest validation loss.

    With `out_dir`, one JSON line per step (loss, learning rates, gradient norm, batch kind and language,
    throughput; ``val_loss`` at validation steps) goes to ``out_dir/train_log.jsonl``, and a checkpoint every
    ``save_every`` steps to ``out_dir/checkpoint.pt``, from which a killed run resumes (`resume`). Under torchrun
    every rank calls it with the same arguments (:func:`hybridnb.training.loop.train_loop`).
    """
    distributed.init()
    sampler = check_config(cfg, train_table)  # every check before any work
    allocator.tune_malloc()
    with distributed.main_first():  # the frozen parts' caches: rank 0 writes them, the others read
        train_table, val_table, image_features_s, text_states_s = prepare_inputs(model, train_table, val_table, cfg)
    val_batches = training.trainer.fixed_validation_batches(cfg, val_table)
    optimizer = build_image_optimizer(model, cfg)
    scheduler = training.trainer.build_scheduler(optimizer, round(cfg.warmup_ratio * cfg.steps), cfg.steps)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if out_dir is not None and distributed.is_main():  # a full disk found now, not as a torn save mid-run
        # the checkpoint (trained weights, AdamW's two moments, the best weights) beside the previous one
        checkpoints.check_free_disk(Path(out_dir), 8 * checkpoints.state_bytes(params), "the run's checkpoint")
    task = ImageTextTask(model, train_table, val_table, val_batches, cfg, params)
    run = loop.train_loop(task, sampler, optimizer, scheduler, cfg, out_dir, resume, show_progress,
                          desc=f"train image-text {cfg.strategy}")
    del optimizer, scheduler
    if task.best_state is not None:
        model.load_state_dict(task.best_state, strict=False)  # the frozen weights never left
    model.eval()
    allocator.release_memory()
    return ImageTextTrainResult(run.history, run.best_step, run.best_val_loss, run.log_path, text_states_s,
                                image_features_s, run.seconds)
