"""hybridnb's recipe trained by sentence-transformers' own trainer: ``SentenceTransformerTrainer`` with the hybrid
batch sampler, the same loss, optimizer, schedule, precision and checkpoint rule as :func:`hybridnb.training.train`.

Why: a user who trains with sentence-transformers should get what hybridnb's trainer gets, and the claim needs a
measurement (:mod:`hybridnb.studies.st_compare` makes it). So every part of the recipe that is a choice is made
here as hybridnb makes it, and what is left is sentence-transformers' own loop (its collator, tokenisation,
loss code, accelerate's autocast and clipping):

* **batches**: :func:`hybridnb.integrations.st_sampler.hybrid_batch_sampler` over the pair dataset of the same
  training table, with the table's language order and the run's seed: the sampler draws the same (item, query
  language, passage language) triples at every step as hybridnb's trainer with that seed, and the pair dataset
  holds the same texts (the first ``n_hard_negatives`` hard negatives, as :func:`hybridnb.data.train_data.collate`).
  One epoch is the whole run (``steps_per_epoch = steps``), so the stream is not cut at epoch boundaries.
* **texts**: E5's prefixes as the trainer's ``prompts`` (``anchor``: the query prefix, ``positive`` and every
  ``negative_k``: the passage prefix), truncated at ``max_length`` tokens (``model.max_seq_length``), as
  :meth:`hybridnb.models.encoders.Encoder.tokenize` does. Without ``prompts`` the trainer would feed the texts
  bare, which is not how E5 (or hybridnb) trains.
* **loss**: ``MultipleNegativesRankingLoss(scale=1 / temperature)`` (cosine similarity = hybridnb's inner product
  of L2-normalised embeddings; query -> passage, every in-batch positive and every hard negative a negative for
  every query: :func:`hybridnb.training.losses.info_nce`). With ``gradcache``: ``CachedMultipleNegativesRankingLoss``
  with ``mini_batch_size = chunk_size`` (the same gradients, as hybridnb's GradCache).
* **optimizer and schedule**: hybridnb's own :func:`hybridnb.training.trainer.build_optimizer` (AdamW, no decay
  on biases and LayerNorm weights, i.e. every parameter with fewer than 2 dimensions) and
  :func:`~hybridnb.training.trainer.build_scheduler` (linear warm-up over ``round(warmup_ratio * steps)`` steps,
  then linear decay to 0), handed to the trainer as ``optimizers=``; gradients clipped at ``max_grad_norm``.
* **precision**: ``bf16=True`` exactly when hybridnb would autocast to bf16
  (:func:`hybridnb.models.precision.resolve` of ``train_dtype``: bf16 where the CPU has it natively).
* **checkpoint rule**: hybridnb keeps the weights with the lowest validation loss, measured every ``val_every``
  steps and at the last step on fixed validation batches (:func:`hybridnb.training.trainer.fixed_validation_batches`)
  in eval mode; ties keep the earlier step. The callback here does the same with hybridnb's own
  :func:`~hybridnb.training.trainer.validation_scores` on the model sentence-transformers is training, and the
  best weights are loaded back at the end.
* **seed**: ``args.seed`` (sentence-transformers seeds torch with it: dropout) and the sampler's seed.

Time per step is measured the way hybridnb's loop measures ``step_s``: from the end of one optimizer step to the
end of the next (data, tokenisation, forward, backward, clipping, optimizer and schedule), without the
validation, which runs after the clock stops; model loading and the trainer's set-up are outside it.

    result = train_st(model, train_table, val_table, cfg)   # cfg: hybridnb.config.TextTraining
    result.model, result.best_step, result.history          # best weights loaded; one record per step
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hybridnb import config
from hybridnb.data.parallel_table import ParallelTable
from hybridnb.integrations.st_sampler import hybrid_batch_sampler, pair_dataset, training_columns
from hybridnb.models import precision
from hybridnb.training import trainer as hybridnb_trainer

__all__ = ["STTrainResult", "st_prompts", "st_loss", "build_st_trainer", "train_st", "STEncoderView",
           "negative_columns"]


def negative_columns(n_hard_negatives: int) -> list[str]:
    """``negative_1 .. negative_n``: the hard-negative columns of :func:`pair_dataset`."""
    return [f"negative_{k + 1}" for k in range(n_hard_negatives)]


def _prefixes(model) -> tuple[str, str]:
    """(query prefix, passage prefix) of a SentenceTransformer: its ``query`` and ``passage`` / ``document`` prompts
    (what :meth:`hybridnb.models.encoders.Encoder.save` writes)."""
    prompts = getattr(model, "prompts", None) or {}
    return prompts.get("query", ""), prompts.get("passage", prompts.get("document", ""))


def st_prompts(model, n_hard_negatives: int) -> dict[str, str]:
    """The trainer's ``prompts``: the query prefix for ``anchor``, the passage prefix for ``positive`` and every
    ``negative_k`` (an empty prefix is left out)."""
    query, passage = _prefixes(model)
    columns = {"anchor": query, "positive": passage, **{c: passage for c in negative_columns(n_hard_negatives)}}
    return {column: prompt for column, prompt in columns.items() if prompt}


def st_loss(model, cfg: config.TextTraining):
    """``MultipleNegativesRankingLoss`` with ``scale = 1 / temperature`` (GradCache: its cached variant)."""
    from sentence_transformers.sentence_transformer.losses import (CachedMultipleNegativesRankingLoss,
                                                                   MultipleNegativesRankingLoss)

    scale = 1.0 / cfg.temperature
    if cfg.gradcache:
        return CachedMultipleNegativesRankingLoss(model, scale=scale, mini_batch_size=cfg.chunk_size)
    return MultipleNegativesRankingLoss(model, scale=scale)


class STEncoderView:
    """A SentenceTransformer seen as the part of :class:`hybridnb.models.encoders.Encoder` that
    :func:`hybridnb.training.trainer.validation_scores` uses (``tokenize(texts, kind)``, calling it on features,
    ``eval`` / ``train``, ``training``, ``device``), so validation is hybridnb's code on the model being trained."""

    def __init__(self, model):
        self.model = model
        self.query_prefix, self.passage_prefix = _prefixes(model)

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def training(self) -> bool:
        return self.model.training

    def eval(self):
        self.model.eval()
        return self

    def train(self, mode: bool = True):
        self.model.train(mode)
        return self

    def tokenize(self, texts, kind: str) -> dict[str, torch.Tensor]:
        if any(not isinstance(t, str) for t in texts):
            raise ValueError("sentence-transformers columns hold one text: (sentence, context) passages are not "
                             "supported here (candidate_mode='sentence')")
        prefix = self.query_prefix if kind == "query" else self.passage_prefix
        preprocess = getattr(self.model, "preprocess", None)  # sentence-transformers >= 6: what its collator calls
        features = preprocess(list(texts), prompt=prefix or None) if preprocess is not None \
            else self.model.tokenize([prefix + t for t in texts])
        return {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}

    def __call__(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(dict(features))["sentence_embedding"]


@dataclass
class STTrainResult:
    model: Any                  # the SentenceTransformer with the best weights loaded (eval mode)
    best_step: int              # -1: never validated (validate=False) or no finite validation loss
    best_val_loss: float
    history: list[dict]         # per step: step, loss, lr (the step's own), step_s, pairs_per_s (+ val_loss,
                                # val_top1, val_mrr when validated): the fields of hybridnb's train log
    trainer: Any = field(repr=False, default=None)

    @property
    def step_seconds(self) -> list[float]:
        return [r["step_s"] for r in self.history]


def _step_clock_callback(view: STEncoderView, val_table: ParallelTable | None, cfg: config.TextTraining,
                         validate: bool):
    """A TrainerCallback: per-step times, hybridnb's validation every ``val_every`` steps and at the end, and a
    copy of the weights with the lowest validation loss (strictly lower: the earlier step keeps a tie)."""
    from transformers import TrainerCallback

    batches = hybridnb_trainer.fixed_validation_batches(cfg, val_table) if validate else []

    class StepClock(TrainerCallback):
        def __init__(self):
            self.records: list[dict] = []
            self.best = {"step": -1, "val_loss": math.inf}
            self.best_state: dict[str, torch.Tensor] | None = None
            self._last = self._lr = None

        def on_train_begin(self, args, state, control, **kwargs):
            self._last = time.perf_counter()

        def on_step_begin(self, args, state, control, lr_scheduler=None, **kwargs):
            # the learning rate this step uses (the trainer's log has the next one: it logs after the schedule's step)
            self._lr = lr_scheduler.get_last_lr()[0] if lr_scheduler is not None else None

        def on_step_end(self, args, state, control, **kwargs):
            seconds = time.perf_counter() - self._last
            done = state.global_step
            record = {"step": done - 1, "lr": self._lr, "step_s": seconds, "pairs_per_s": cfg.batch_size / seconds}
            if validate and (done % cfg.val_every == 0 or done == cfg.steps):
                val = hybridnb_trainer.validation_scores(view, val_table, batches, cfg)
                record.update(val_loss=val["loss"], val_top1=val["top1"], val_mrr=val["mrr"])
                if val["loss"] < self.best["val_loss"]:
                    self.best = {"step": done, "val_loss": val["loss"]}
                    self.best_state = {k: v.detach().clone() for k, v in view.model.state_dict().items()}
            self.records.append(record)
            self._last = time.perf_counter()  # validation and the copy are not part of the next step

    return StepClock()


def build_st_trainer(model, train_table: ParallelTable, cfg: config.TextTraining, output_dir: str | Path,
                     callbacks=(), show_progress: bool = False):
    """The ``SentenceTransformerTrainer`` of the recipe (module docstring) on ``train_table``; not yet trained.

    ``model``: a SentenceTransformer whose ``max_seq_length`` is the run's ``max_length`` (its parameters get
    the optimizer, so it must sit on its device already). ``output_dir``: the trainer's folder (nothing is
    saved there: ``save_strategy="no"``)."""
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

    if any(not isinstance(p, str) for lang in train_table.languages for p in train_table.positives[lang]
           if p is not None):
        raise ValueError("the training table has (sentence, context) passages; sentence-transformers columns hold "
                         "one text: build it with candidate_mode='sentence'")
    pairs = pair_dataset(train_table, n_hard_negatives=cfg.n_hard_negatives)
    sampler = hybrid_batch_sampler(pairs, strategy=cfg.strategy, alpha=cfg.alpha,
                                   language_sampling=cfg.language_sampling, languages=list(train_table.languages),
                                   steps_per_epoch=cfg.steps)
    bf16 = precision.resolve(cfg.train_dtype, model.device) == "bfloat16"
    args = SentenceTransformerTrainingArguments(
        output_dir=str(output_dir), max_steps=cfg.steps, per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.lr, weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm, seed=cfg.seed,
        batch_sampler=sampler, prompts=st_prompts(model, cfg.n_hard_negatives) or None, bf16=bf16,
        use_cpu=model.device.type == "cpu", eval_strategy="no", save_strategy="no", logging_steps=1,
        report_to=[], disable_tqdm=not show_progress, dataloader_num_workers=0)
    optimizer = hybridnb_trainer.build_optimizer(model, cfg.lr, cfg.weight_decay)
    scheduler = hybridnb_trainer.build_scheduler(optimizer, round(cfg.warmup_ratio * cfg.steps), cfg.steps)
    # sentence-transformers samples model-card "widget examples" from the data when the trainer is made, unless the
    # card has a widget already: it draws from Python's global random and shows a progress bar (five of them in an
    # executed notebook). A placeholder while the trainer is made skips that; the card's own widget comes back.
    card = model.model_card_data
    widget, card.widget = card.widget, card.widget or [{"text": "not sampled by hybridnb's trainer"}]
    try:
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=training_columns(pairs),
                                             loss=st_loss(model, cfg), optimizers=(optimizer, scheduler),
                                             callbacks=list(callbacks))
    finally:
        card.widget = widget
    if not show_progress:  # without a progress bar transformers prints every step's log dict instead
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    return trainer


def train_st(model, train_table: ParallelTable, val_table: ParallelTable | None, cfg: config.TextTraining,
             output_dir: str | Path, validate: bool = True, show_progress: bool = False) -> STTrainResult:
    """Train ``model`` (a SentenceTransformer) in place with :func:`build_st_trainer`; with ``validate`` keep and
    load back the weights of the lowest validation loss on ``val_table`` (hybridnb's rule), else the last ones
    (``validate=False``: a timing run). Returns them with the per-step log."""
    if cfg.mask_false_negatives:  # MNRL has no per-batch mask: refused, not silently trained without it
        raise ValueError("mask_false_negatives is not supported by the sentence-transformers route "
                         "(MultipleNegativesRankingLoss has no per-batch mask); train with hybridnb's trainer")
    if cfg.length_groups > 1:  # the same: not silently trained as one padded batch
        raise ValueError("length_groups > 1 is not supported by the sentence-transformers route (its loss encodes each "
                         "column as one padded batch); train with hybridnb's trainer")
    view = STEncoderView(model)
    clock = _step_clock_callback(view, val_table, cfg, validate)
    trainer = build_st_trainer(model, train_table, cfg, output_dir, [clock], show_progress)
    trainer.train()
    losses = {int(r["step"]) - 1: r["loss"] for r in trainer.state.log_history if "loss" in r and "step" in r}
    history = [{"step": r["step"], "loss": losses.get(r["step"]), **r} for r in clock.records]
    if clock.best_state is not None:
        model.load_state_dict(clock.best_state)
    model.eval()
    return STTrainResult(model, clock.best["step"], clock.best["val_loss"], history, trainer)
