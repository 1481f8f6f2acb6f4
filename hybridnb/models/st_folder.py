"""The sentence-transformers folder layout, as far as :class:`hybridnb.models.encoders.Encoder` reads and writes it:
``modules.json`` (Transformer -> Pooling -> Dense* -> Normalize) and the ``Dense`` module (LaBSE's 768->768 tanh),
whose activation is resolved from a ``torch.nn`` class path only (nothing else is imported from a folder).
"""

from __future__ import annotations

import importlib
import inspect
import json
from pathlib import Path

import torch

__all__ = ["DenseLayer", "read_sentence_transformers", "write_json"]


def _activation(name: str) -> torch.nn.Module:
    """A torch.nn activation from its class path (as sentence-transformers writes it); nothing else is imported."""
    module, _, cls_name = str(name).rpartition(".")
    if module != "torch.nn" and not module.startswith("torch.nn."):
        raise ValueError(f"unsupported Dense activation {name!r}: expected a torch.nn class path, "
                         "e.g. 'torch.nn.modules.activation.Tanh'")
    try:
        cls = getattr(importlib.import_module(module), cls_name, None)
    except ImportError:
        cls = None
    if not (inspect.isclass(cls) and issubclass(cls, torch.nn.Module)):
        raise ValueError(f"unsupported Dense activation {name!r}: not a torch.nn.Module class")
    return cls()


class DenseLayer(torch.nn.Module):
    """sentence-transformers' ``Dense`` module: ``activation(linear(x))``, with its state-dict keys and files."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 activation_function: str = "torch.nn.modules.activation.Tanh"):
        super().__init__()
        self.linear = torch.nn.Linear(in_features, out_features, bias=bias)
        self.activation_function = activation_function
        self.activation = _activation(activation_function)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.linear(x))

    @property
    def out_features(self) -> int:
        return self.linear.out_features

    @classmethod
    def load(cls, folder: Path) -> "DenseLayer":
        """From ``config.json`` + ``model.safetensors`` (or the older ``pytorch_model.bin``)."""
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        renamed = {cfg.get("module_input_name"), cfg.get("module_output_name")} - {None, "sentence_embedding"}
        if cfg.get("use_residual") or renamed:
            raise ValueError(f"{folder}: unsupported Dense options (residual or renamed inputs): {cfg}")
        layer = cls(int(cfg["in_features"]), int(cfg["out_features"]), bool(cfg.get("bias", True)),
                    cfg.get("activation_function", "torch.nn.modules.activation.Tanh"))
        if (folder / "model.safetensors").exists():
            from safetensors.torch import load_file

            state = load_file(str(folder / "model.safetensors"))
        elif (folder / "pytorch_model.bin").exists():
            state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
        else:
            raise ValueError(f"{folder}: Dense module without model.safetensors or pytorch_model.bin")
        layer.load_state_dict(state)  # strict: the keys are linear.weight (and linear.bias)
        return layer

    def save(self, folder: Path) -> None:
        """The files ``sentence_transformers.models.Dense`` reads (only the keys every version accepts)."""
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / "config.json", {
            "in_features": self.linear.in_features, "out_features": self.linear.out_features,
            "bias": self.linear.bias is not None, "activation_function": self.activation_function})
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()},
                  str(folder / "model.safetensors"))


# sentence-transformers modules we reproduce, in the only order we accept (Dense may repeat)
_ST_ORDER = {"Transformer": 0, "Pooling": 1, "Dense": 2, "Normalize": 3}


def read_sentence_transformers(path: Path) -> tuple[Path, dict, list[Path]]:
    """(folder of the HF model, config defaults, Dense module folders) of a sentence-transformers folder."""
    modules = json.loads((path / "modules.json").read_text(encoding="utf-8"))
    defaults: dict = {"normalize": False}
    hf_dir = path
    dense_dirs: list[Path] = []
    last = -1
    for mod in modules:
        kind = mod.get("type", "").rsplit(".", 1)[-1]
        mdir = path / mod.get("path", "")
        rank = _ST_ORDER.get(kind)
        if rank is None or rank < last or (rank == last and kind != "Dense"):
            raise ValueError(f"{path}: unsupported sentence-transformers module {mod.get('type')!r} at position "
                             f"{mod.get('idx')}; supported: Transformer, Pooling, Dense (any number), "
                             "Normalize, in that order")
        last = rank
        if kind == "Dense":
            dense_dirs.append(mdir)
        elif kind == "Transformer":
            hf_dir = mdir
            cfg = mdir / "sentence_bert_config.json"
            if cfg.exists():
                msl = json.loads(cfg.read_text(encoding="utf-8")).get("max_seq_length")
                tok_cfg = mdir / "tokenizer_config.json"
                if msl is None and tok_cfg.exists():  # sentence-transformers >= 6 keeps it in the tokenizer
                    msl = json.loads(tok_cfg.read_text(encoding="utf-8")).get("model_max_length")
                    msl = msl if isinstance(msl, int) and msl < 1_000_000 else None  # not HF's "no limit"
                if msl:
                    defaults["max_length"] = int(msl)
        elif kind == "Pooling":
            pc = json.loads((mdir / "config.json").read_text(encoding="utf-8"))
            mode = pc.get("pooling_mode")  # sentence-transformers >= 6
            if mode is None:  # the classic flags
                on = [k for k, v in pc.items() if k.startswith("pooling_mode_") and v is True]
                mode = on[0].removeprefix("pooling_mode_").removesuffix("_token").removesuffix("_tokens") if on else "none"
            defaults["pooling"] = mode  # EncoderConfig rejects anything but mean / cls
        else:  # Normalize
            defaults["normalize"] = True
    st_cfg = path / "config_sentence_transformers.json"
    if st_cfg.exists():
        prompts = json.loads(st_cfg.read_text(encoding="utf-8")).get("prompts") or {}
        defaults["query_prefix"] = prompts.get("query", "")
        defaults["passage_prefix"] = prompts.get("passage", prompts.get("document", ""))
    return hf_dir, defaults, dense_dirs


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

