"""The training loop, one for text and image-text: batches from the sampler, the modality's loss and gradients,
clipping, AdamW and its schedule, the log, validation and the best weights, checkpoints and exact resume.

One step: the sampler (:mod:`hybridnb.training.sampling`) draws this rank's shard of the global batch; the task
computes the loss of the batch and leaves its gradients in ``.grad`` (text: the dual encoder's InfoNCE, plainly or
with GradCache, under DDP when distributed; image-text: the image-caption and caption-caption InfoNCE); the
gradients are clipped; AdamW steps with the linear warm-up and decay schedule. Every ``val_every`` steps (and at
the end) rank 0 validates; the weights with the lowest validation loss are kept by the task (text: ``best/`` on
disk; image-text: a copy in memory, restored at the end).

Checkpoints (every ``save_every`` steps and at the end) hold the task's weights, the optimizer, scheduler, sampler
and every rank's RNG state, written atomically, so a killed run resumes where its last checkpoint was and ends
with the same weights and log as an uninterrupted run. Under torchrun the same loop runs on every rank
(:mod:`hybridnb.training.distributed`); rank 0 alone validates and writes.

A modality brings a :class:`Task` (:class:`hybridnb.training.trainer.TextTask`,
:class:`hybridnb.image_text.trainer.ImageTextTask`) and builds the optimizer and scheduler; the loop owns the rest.

    task = TextTask(encoder, train_table, val_table, val_batches, cfg, out_dir)
    run = train_loop(task, sampler, optimizer, scheduler, cfg, out_dir)
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ContextManager, Protocol

import torch
from tqdm.auto import tqdm

from hybridnb import config, paths
from hybridnb.models import weight_files
from hybridnb.training import checkpoints, distributed
from hybridnb.training.batch_kinds import Batch

__all__ = ["CHECKPOINT", "LOG", "Task", "LoopResult", "train_loop"]

CHECKPOINT = "checkpoint.pt"
LOG = "train_log.jsonl"


class Task(Protocol):
    """What a modality brings to :func:`train_loop`."""

    module: torch.nn.Module              # switched to training mode (dropout) for the steps
    params: list[torch.nn.Parameter]     # clipped together, in this order (the order of the norm's sum)
    lr_names: dict[str, int]             # log field -> the optimizer param group whose learning rate it records
    config: dict[str, Any]               # stored in the checkpoint; a resume with another config is refused

    def steps(self) -> ContextManager: ...                   # entered after the resume, around every step
    def step(self, batch: Batch) -> tuple[float, dict]: ...  # loss and gradients of a batch: (loss, more log fields)
    def validate(self) -> dict[str, float]: ...              # rank 0: {"val_loss": ..., more validation scores}
    def new_best(self, step: int) -> None: ...               # every rank: the weights now are the best so far
    def state_dict(self) -> dict: ...                        # what the checkpoint holds of the task
    def load_state_dict(self, state: dict) -> None: ...


@dataclass
class LoopResult:
    history: list[dict]     # one log record per step, those before a resume read back from the log
    best_step: int          # -1: no validation loss was ever below infinity
    best_val_loss: float
    start: int              # the step this process started from (> 0: resumed)
    log_path: Path | None
    seconds: dict[str, float] = field(default_factory=dict)  # this process's time outside the steps: validate_s,
                                                             # best_s (keeping the best weights), checkpoint_s


def train_loop(task: Task, sampler, optimizer: torch.optim.Optimizer, scheduler, cfg: config.Training,
               out_dir: str | os.PathLike | None, resume: bool = True, show_progress: bool = True,
               desc: str = "train") -> LoopResult:
    """Steps ``[start, cfg.steps)`` of `task`; with `out_dir`, the log and checkpoints go there and a run killed
    after a checkpoint resumes from it (`resume`). Under torchrun every rank calls it with the same arguments
    (`out_dir` on a filesystem all ranks share)."""
    main = distributed.is_main()
    log_path = ckpt_path = None
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        ckpt_path, log_path = out_dir / CHECKPOINT, out_dir / LOG
    start, best = 0, {"step": -1, "val_loss": math.inf}
    torch.manual_seed(cfg.seed + distributed.rank())  # each rank its own dropout masks
    # a checkpoint cut by something outside the atomic save (a torn copy, a full disk on sync) is a cache: start over
    # (a flipped byte still loads: a checkpoint must also match the sha256 its save recorded beside it)
    damaged = resume and ckpt_path is not None and ckpt_path.exists() and (
        weight_files.damaged(ckpt_path) or checkpoints.checkpoint_problem(ckpt_path))
    if damaged and main:
        print(f"[hybridnb] {ckpt_path} is damaged ({damaged}): training from step 0", flush=True)
    if resume and ckpt_path is not None and ckpt_path.exists() and paths.reusable(ckpt_path) and not damaged:
        state = torch.load(ckpt_path, map_location=task.params[0].device, weights_only=False)
        if state["config"] != task.config:
            raise ValueError(f"{ckpt_path} was written with a different configuration; "
                             "use another output folder or resume=False")
        task.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        sampler.load_state_dict(state["sampler"])
        checkpoints.set_rank_rng_state(state["rng"])
        start, best = state["step"], state["best"]
    starts = distributed.all_gather_object(start)
    if len(set(starts)) > 1:
        raise RuntimeError(f"the ranks would resume from different steps {starts}: {out_dir} must be on a "
                           "filesystem every rank shares")
    history = checkpoints.read_log(log_path, start) if start else []
    distributed.barrier()  # every rank has read the log before rank 0 rewrites it
    if main and log_path is not None:
        with open(log_path, "w", encoding="utf-8") as f:  # drop records past the checkpoint
            f.writelines(json.dumps(r) + "\n" for r in history)

    task.module.train()
    spent = {"validate_s": 0.0, "best_s": 0.0, "checkpoint_s": 0.0}
    bar = tqdm(total=cfg.steps, initial=start, disable=not (show_progress and main), desc=desc)
    with open(log_path, "a", encoding="utf-8") if main and log_path else contextlib.nullcontext() as log, \
            task.steps():
        for step in range(start, cfg.steps):
            t0 = time.perf_counter()
            batch = sampler.next_batch()  # this rank's shard of the global batch
            loss, more = task.step(batch)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(task.params, cfg.max_grad_norm))
            lrs = scheduler.get_last_lr()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            seconds = time.perf_counter() - t0
            record = {"step": step, "loss": loss, **{name: lrs[i] for name, i in task.lr_names.items()},
                      "grad_norm": grad_norm, "kind": batch.kind, "language": batch.language, **more,
                      "pairs_per_s": cfg.batch_size / seconds, "step_s": seconds}
            done = step + 1
            if done % cfg.val_every == 0 or done == cfg.steps:
                t0 = time.perf_counter()
                val = task.validate() if main else None
                record.update(distributed.broadcast_object(val))  # rank 0's, so all ranks agree
                spent["validate_s"] += time.perf_counter() - t0
                if record["val_loss"] < best["val_loss"]:
                    best = {"step": done, "val_loss": record["val_loss"]}
                    t0 = time.perf_counter()
                    task.new_best(done)
                    spent["best_s"] += time.perf_counter() - t0
            if log is not None:
                log.write(json.dumps(record) + "\n")
                log.flush()
            history.append(record)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", kind=batch.kind)
            if ckpt_path is not None and (done % cfg.save_every == 0 or done == cfg.steps):
                t0 = time.perf_counter()
                rng = checkpoints.rank_rng_state()  # every rank's (a collective), before rank 0 writes
                if main:
                    checkpoints.save_checkpoint(ckpt_path, step=done, best=best, config=task.config,
                                                model=task.state_dict(), optimizer=optimizer.state_dict(),
                                                scheduler=scheduler.state_dict(), sampler=sampler.state_dict(),
                                                rng=rng)
                spent["checkpoint_s"] += time.perf_counter() - t0
    bar.close()
    return LoopResult(history, best["step"], best["val_loss"], start, log_path, spent)
