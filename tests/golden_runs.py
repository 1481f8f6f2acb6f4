"""Tiny text and image-text training runs whose every number is recorded in ``tests/fixtures/loop_golden.json``:
the proof that the one training loop (``hybridnb.training.loop``) computes what the two loops before it computed.

The fixture was written by the loops before the merge (commit 279fed1, ``hybridnb.training.trainer.train`` and
``hybridnb.image_text.trainer.train_image_text`` each with its own loop) with

    OMP_NUM_THREADS=1 python tests/golden_runs.py tests/fixtures/loop_golden.json

and ``tests/test_training_loop.py`` runs the same runs through today's code and compares. Each run records every
log field that does not measure time (loss, learning rates, gradient norm, batch kind and language, validation
scores), the best step and its validation loss, and the sha256 of the weights it ends with (text: ``final/`` and
``best/``; image-text: the model after training, the best weights restored).

Float arithmetic is bit-exact only on the same kernels: the fixture names the torch version and CPU capability
it was recorded with, and on another machine the test compares to a tolerance instead (see the test).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from tiny_models import caption_table, save_tiny_bert, synthetic_table  # noqa: E402

#: the text runs: a float32 plain run (its best step before the last: best/ is not final/), and a GradCache run
#: under bf16 autocast (the cpu profile's precision)
TEXT_RUNS = {
    "text_plain_float32": dict(steps=6, batch_size=8, save_every=3, val_every=2, val_batches=2, lr=3e-2, seed=0,
                               train_dtype="float32", strategy="hybrid"),
    "text_gradcache_bf16": dict(steps=5, batch_size=8, save_every=2, val_every=2, val_batches=2, lr=1e-3, seed=1,
                                train_dtype="bfloat16", strategy={"mono": 0.4, "cross": 0.3, "mixed": 0.2, "en": 0.1},
                                gradcache=True, chunk_size=3),
}
#: the image-text runs: a CNN tower training every text layer, and frozen lower text layers (cached) in 2 length
#: groups with frozen word embeddings (the cpu profile's set-up)
IMAGE_TEXT_BASE = dict(strategy="hybrid", batch_size=6, lr=2e-3, image_lr=3e-3, warmup_ratio=0.2, image_size=16,
                       dim=16, max_length=8, image_tower_args={"width": 8, "depth": 2}, val_batches=2, temperature=0.1)
IMAGE_TEXT_RUNS = {
    "image_text_cnn": dict(IMAGE_TEXT_BASE, steps=7, val_every=3, seed=0),
    "image_text_frozen_layers": dict(IMAGE_TEXT_BASE, steps=6, val_every=2, seed=2, freeze_embeddings=True,
                                     frozen_text_layers=1, length_groups=2),
}
TIMING = ("pairs_per_s", "step_s")


def machine() -> dict:
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over the names, dtypes, shapes and bytes of every tensor, in name order."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def log_records(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in history]


def text_run(name: str, bert: Path, table, out: Path) -> dict:
    from safetensors.torch import load_file

    from hybridnb import training
    from hybridnb.data.train_data import split_validation
    from hybridnb.models.encoders import Encoder

    train_t, val_t = split_validation(table, 0.25, seed=0)
    encoder = Encoder.from_pretrained(bert, max_length=32)
    result = training.train(encoder, train_t, val_t, training.TextTraining(**TEXT_RUNS[name]), out / name,
                            show_progress=False)
    weights = lambda folder: load_file(folder / "0_Transformer" / "model.safetensors")  # noqa: E731
    return {"log": log_records(result.history), "best_step": result.best_step, "best_val_loss": result.best_val_loss,
            "final_sha256": digest(weights(result.final_dir)), "best_sha256": digest(weights(result.best_dir))}


def image_text_run(name: str, bert: Path, out: Path) -> dict:
    from hybridnb.image_text import trainer as itt
    from hybridnb.models.encoders import Encoder

    cfg = itt.ImageTextTraining(**IMAGE_TEXT_RUNS[name])
    model = itt.build_model(cfg, Encoder.from_pretrained(bert, max_length=cfg.max_length))
    result = itt.train_image_text(model, caption_table(), caption_table(12, seed=1), cfg, out / name,
                                  show_progress=False)
    return {"log": log_records(result.history), "best_step": result.best_step, "best_val_loss": result.best_val_loss,
            "model_sha256": digest(model.state_dict())}


def run_all(only=None) -> dict:
    """Every run of this file (or those named in ``only``) in a fresh temporary folder, one torch thread."""
    torch.set_num_threads(1)
    out, cache = {}, os.environ.get("HYBRIDNB_CACHE")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["HYBRIDNB_CACHE"] = str(tmp / "cache")  # the frozen text layers' states: computed afresh
        bert = save_tiny_bert(tmp / "bert", dropout=0.1)  # dropout: the RNG's order is part of the result
        table = synthetic_table()
        for name in TEXT_RUNS:
            if only is None or name in only:
                out[name] = text_run(name, bert, table, tmp)
        for name in IMAGE_TEXT_RUNS:
            if only is None or name in only:
                out[name] = image_text_run(name, bert, tmp)
    if cache is None:
        os.environ.pop("HYBRIDNB_CACHE")
    else:
        os.environ["HYBRIDNB_CACHE"] = cache
    return out


if __name__ == "__main__":
    path = Path(sys.argv[1])
    path.write_text(json.dumps({"machine": machine(), "runs": run_all()}, indent=1) + "\n")
    print(f"wrote {path}")
