"""Top-k inner-product search over a sharded corpus index with faiss: exact by default, approximate on request.

* ``flat`` (default, exact): one ``faiss.IndexFlatIP`` holds one shard at a time; every shard is searched for
  the queries' top k and the per-shard lists are merged into the global top k. Memory stays at one shard (read
  from its memory map, float16 shards widened to float32 one at a time) plus the (queries, k) lists, however
  large the corpus; the scores are exact inner products, so the ranking is a brute-force search's. Ties keep the
  lower corpus row first.
* ``ivf`` (IVF-Flat: ``nlist`` k-means cells trained on ``train_size`` rows sampled evenly over the shards,
  ``nprobe`` cells visited per query) and ``hnsw`` (a graph with ``M`` links per node, ``ef_construction`` /
  ``ef_search`` candidate lists): approximate, much faster per query on large corpora. Both are built by adding
  the shards one at a time and keep every vector in memory (float32) as the index itself; the built index is
  saved beside the shards (``ivf-<settings hash>.faiss``) and reused. Use them when exact search is too slow,
  not to save memory (exact search over the memory-mapped shards needs the least).

Scores are inner products of the stored embeddings (normalised encoders: cosine). Rows without a hit (k larger
than the corpus) are ``-1`` with score ``-inf``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from hybridnb import file_hashes, paths, reporting

__all__ = ["INDEX_TYPES", "DEFAULT_PARAMS", "check_index", "describe", "search", "search_flat", "build_approximate"]

INDEX_TYPES = ("flat", "ivf", "hnsw")
DEFAULT_PARAMS: dict[str, dict[str, int]] = {
    "flat": {},
    "ivf": {"nlist": 1024, "nprobe": 32, "train_size": 100_000, "seed": 0},
    "hnsw": {"M": 32, "ef_construction": 200, "ef_search": 128},
}


def check_index(spec: dict | None) -> tuple[str, dict[str, int]]:
    """``{"type": flat | ivf | hnsw, "params": {...}}`` -> (type, params with defaults); ValueError naming the key."""
    spec = dict(spec or {"type": "flat"})
    unknown = set(spec) - {"type", "params"}
    if unknown:
        raise ValueError(f"miracl_index: unknown key(s) {sorted(unknown)}; expected type and params")
    index_type = spec.get("type", "flat")
    if index_type not in INDEX_TYPES:
        raise ValueError(f"miracl_index type must be one of {', '.join(map(repr, INDEX_TYPES))}, got {index_type!r}")
    params = spec.get("params") or {}
    if not isinstance(params, dict):
        raise ValueError(f"miracl_index params must be a mapping, got {params!r}")
    bad = set(params) - set(DEFAULT_PARAMS[index_type])
    if bad:
        raise ValueError(f"miracl_index params {sorted(bad)} do not apply to {index_type!r}; it takes "
                         f"{sorted(DEFAULT_PARAMS[index_type]) or 'none'}")
    out = {**DEFAULT_PARAMS[index_type], **params}
    for key, value in out.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == "seed" else 1):
            raise ValueError(f"miracl_index params: {key} must be a positive int, got {value!r}")
    return index_type, out


def _merge(best_s: np.ndarray, best_i: np.ndarray, s: np.ndarray, i: np.ndarray, k: int):
    """The top k of two (Q, *) candidate lists by score, the earlier list (lower rows) first among ties."""
    scores, ids = np.concatenate([best_s, s], axis=1), np.concatenate([best_i, i], axis=1)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)


def _queries(queries: np.ndarray, dim: int) -> np.ndarray:
    q = np.ascontiguousarray(np.asarray(queries, dtype=np.float32))
    if q.ndim != 2 or q.shape[1] != dim:
        raise ValueError(f"queries must be (n, {dim}), got {q.shape}")
    return q


def search_flat(index, queries: np.ndarray, k: int, show_progress: bool = False):
    """Exact top ``k`` by inner product, shard by shard (see the module docstring); (scores, rows), (Q, k) each."""
    import faiss
    from tqdm.auto import tqdm

    q = _queries(queries, index.dim)
    best_s = np.full((len(q), k), -np.inf, dtype=np.float32)
    best_i = np.full((len(q), k), -1, dtype=np.int64)
    flat = faiss.IndexFlatIP(index.dim)
    for start, shard in tqdm(index.shards(), total=index.n_shards, desc="search shards", disable=not show_progress):
        flat.reset()
        flat.add(np.ascontiguousarray(shard, dtype=np.float32))
        s, i = flat.search(q, min(k, len(shard)))
        i = np.where(i >= 0, i + start, -1)
        s = np.where(i >= 0, s, -np.inf).astype(np.float32)
        best_s, best_i = _merge(best_s, best_i, s, i, k)
    return best_s, best_i


def _sample_rows(index, n: int, seed: int) -> np.ndarray:
    """About ``n`` training rows, spread evenly over the shards (each shard's share drawn at random)."""
    rng = np.random.default_rng(seed)
    share = n / index.n_passages
    parts = []
    for _, shard in index.shards():
        take = min(len(shard), max(1, int(round(share * len(shard)))))
        rows = np.sort(rng.choice(len(shard), size=take, replace=False))
        parts.append(np.asarray(shard[rows], dtype=np.float32))
    return np.ascontiguousarray(np.concatenate(parts))


def build_approximate(index, index_type: str, params: dict[str, int], show_progress: bool = False):
    """The IVF-Flat or HNSW faiss index over every shard, built once and saved beside the shards."""
    import faiss
    from tqdm.auto import tqdm

    key = hashlib.sha256(json.dumps({"kind": index_type, "params": params, "manifest": index.manifest},
                                    sort_keys=True).encode()).hexdigest()[:12]
    path = index.folder / f"{index_type}-{key}.faiss"
    if path.is_file():
        why = file_hashes.sidecar_problem(path)  # a flipped byte in a saved index still loads: the hash sees it
        if why is None:
            return faiss.read_index(str(path))
        print(f"[hybridnb] the {index_type} index {paths.shown(path)} is damaged ({why}): building it again",
              flush=True)
    if index_type == "ivf":
        nlist = min(params["nlist"], index.n_passages)
        ann = faiss.IndexIVFFlat(faiss.IndexFlatIP(index.dim), index.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        ann.cp.seed = params["seed"]
        ann.train(_sample_rows(index, max(params["train_size"], nlist), params["seed"]))
    elif index_type == "hnsw":
        ann = faiss.IndexHNSWFlat(index.dim, params["M"], faiss.METRIC_INNER_PRODUCT)
        ann.hnsw.efConstruction = params["ef_construction"]
    else:
        raise ValueError(f"no approximate index of type {index_type!r}")
    for _, shard in tqdm(index.shards(), total=index.n_shards, desc=f"build {index_type}", disable=not show_progress):
        ann.add(np.ascontiguousarray(shard, dtype=np.float32))
    with reporting.atomic_path(path) as tmp:
        faiss.write_index(ann, str(tmp))
    file_hashes.write_sidecar(path)  # after the index: read back only when it matches
    return ann


def search(index, queries: np.ndarray, k: int, spec: dict | None = None, show_progress: bool = False):
    """Top ``k`` corpus rows per query by inner product: (scores float32 (Q, k), rows int64 (Q, k)).

    ``spec`` is the profile's ``miracl_index`` (:func:`check_index`): exact ``flat`` by default."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    index_type, params = check_index(spec)
    if index_type == "flat":
        return search_flat(index, queries, k, show_progress)
    ann = build_approximate(index, index_type, params, show_progress)
    if index_type == "ivf":
        ann.nprobe = min(params["nprobe"], ann.nlist)
    else:
        ann.hnsw.efSearch = max(params["ef_search"], k)
    scores, rows = ann.search(_queries(queries, index.dim), min(k, index.n_passages))
    if rows.shape[1] < k:
        pad = k - rows.shape[1]
        rows = np.pad(rows, ((0, 0), (0, pad)), constant_values=-1)
        scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
    scores = np.where(rows >= 0, scores, -np.inf).astype(np.float32)
    return scores, rows.astype(np.int64)


def describe(spec: dict | None) -> dict[str, Any]:
    """The index settings as recorded in a results file."""
    index_type, params = check_index(spec)
    return {"type": index_type, "params": params}
