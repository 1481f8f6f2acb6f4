"""The model card (README.md) that :meth:`hybridnb.models.encoders.Encoder.save` writes next to the weights.

Without :class:`CardDetails` the card is what it always was (what it is, the ``about`` lines, how to encode), so
folders saved before keep their card and the trainer's call is unchanged. With details it also carries, each
only when given: the training recipe, the data, the metrics with their intervals (the results blocks of
:func:`hybridnb.evaluation.runner.results_block`, as a run's ``results.json`` stores them under
``datasets``), the paper's citation (arXiv:2408.10536), and the Hugging Face front-matter keys
(``language``, ``license``, ``datasets``, ``base_model``) that the hub indexes.

Pushing a saved folder to the hub as it is (card included; network and a token needed)::

    from sentence_transformers import SentenceTransformer
    SentenceTransformer(folder).push_to_hub("you/name", local_model_path=folder)

(``local_model_path`` uploads the folder's files unchanged; without it sentence-transformers saves the model
again and writes its own card in place of this one.) ``huggingface_hub.upload_folder(repo_id=...,
folder_path=folder)`` does the same.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PAPER_CITATION", "CardDetails", "model_card"]

PAPER_CITATION = """@article{elmahdy2024synergistic,
  title = {Synergistic Approach for Simultaneous Optimization of Monolingual, Cross-lingual, and Multilingual Information Retrieval},
  author = {Elmahdy, Adel and Lin, Sheng-Chieh and Ahmad, Amin},
  journal = {arXiv preprint arXiv:2408.10536},
  year = {2024},
  url = {https://arxiv.org/abs/2408.10536},
}"""

_SETTINGS = ("mono", "cross", "multi")
_METRICS = ("map", "r@1", "r@10")


@dataclass(frozen=True)
class CardDetails:
    """What a card carries beyond the defaults; every field is optional.

    ``recipe``: training settings, one line each (strategy, alpha, steps, ...). ``data``: the data, one line
    each (training set, evaluation sets, items, licences). ``metrics``: ``{dataset: results block}``; a
    metric is ``{"value": v, "ci": [low, high]}`` or a plain number, the block's ``bootstrap`` entry (if any)
    says what the interval is. ``cite``: add the paper's BibTeX. ``language``, ``license``, ``datasets``:
    front-matter keys for the hub.
    """

    recipe: Mapping[str, Any] | None = None
    data: Mapping[str, Any] | None = None
    metrics: Mapping[str, Mapping[str, Any]] | None = None
    cite: bool = False
    language: Sequence[str] = ()
    license: str | None = None
    datasets: Sequence[str] = field(default_factory=tuple)

    @classmethod
    def from_results(cls, results: Mapping[str, Any], cite: bool = True, **kwargs) -> "CardDetails":
        """Details from a run's ``results.json`` (schema in docs/training.md): its training block as the recipe,
        its data lines, its datasets' metrics with their bootstrap intervals."""
        training = dict(results.get("training") or {})
        data = {"training data": training.pop("train_data", None), "training items": training.pop("train_items", None),
                "validation items": training.pop("val_items", None),
                "evaluation text removed from training": training.pop("dropped_overlap", None),
                "evaluated on": ", ".join(results.get("datasets") or {}) or None}
        return cls(recipe={k: v for k, v in training.items() if v is not None},
                   data={k: v for k, v in data.items() if v is not None},
                   metrics=dict(results.get("datasets") or {}), cite=cite, **kwargs)


def _value(entry: Any) -> tuple[str, str]:
    """(value, interval) cells of a metric entry."""
    if isinstance(entry, Mapping):
        value, ci = entry.get("value"), entry.get("ci")
    else:
        value, ci = entry, None
    fmt = (lambda x: "n/a" if x is None else f"{x:.4f}" if abs(x) < 10 else f"{x:.1f}")  # noqa: E731
    interval = f"[{fmt(ci[0])}, {fmt(ci[1])}]" if ci and len(ci) == 2 else ""
    return fmt(value), interval


def _metrics_lines(metrics: Mapping[str, Mapping[str, Any]]) -> list[str]:
    lines = ["## Evaluation", ""]
    for dataset, block in metrics.items():
        boot = block.get("bootstrap") or {}
        what = (f"{boot.get('confidence', 0.95):.0%} bootstrap interval over {boot.get('unit', 'questions')}s "
                f"({boot.get('n_resamples')} resamples)") if boot else "interval as given"
        lines += [f"**{dataset}** ({block.get('n_queries', '?')} questions, {block.get('n_candidates', '?')} "
                  f"candidates; {what}):", "", "| setting | metric | value | interval |", "| --- | --- | --- | --- |"]
        for setting in _SETTINGS:
            for metric in _METRICS:
                if metric in (block.get(setting) or {}):
                    lines.append(f"| {setting} | {metric} | " + " | ".join(_value(block[setting][metric])) + " |")
        if "rank_distance" in block:
            lines.append("| multi | rank distance (lower is better) | " + " | ".join(_value(block["rank_distance"]))
                         + " |")
        lines.append("")
    lines += ["Settings as in LAReQA (Roy et al. 2020): mono X->X, cross X->Y, multi X->all languages' pooled "
              "candidates; mAP over the full pool, macro-averaged over languages.", ""]
    return lines


def model_card(config, about: dict[str, Any] | None = None, details: CardDetails | None = None) -> str:
    """The README.md of a saved encoder: what it is, how it was trained, how to encode with it."""
    q, p = config.query_prefix, config.passage_prefix
    front = ["---", "library_name: sentence-transformers", "tags: [sentence-transformers, hybridnb, retrieval]"]
    if details is not None:
        if details.language:
            front.append("language: [" + ", ".join(details.language) + "]")
        if details.license:
            front.append(f"license: {details.license}")
        if details.datasets:
            front.append("datasets: [" + ", ".join(details.datasets) + "]")
        if "/" in str(config.name_or_path) and not str(config.name_or_path).startswith(("/", ".")):
            front.append(f"base_model: {config.name_or_path}")  # a hub id, not a local folder
        front.append("pipeline_tag: sentence-similarity")
    lines = front + ["---", "", "# A hybridnb dual encoder", "",
                     f"Base model: `{config.name_or_path}`. Pooling: {config.pooling}"
                     f"{', L2-normalised' if config.normalize else ''}; max length {config.max_length} tokens. "
                     f"Query prefix {q!r}, passage prefix {p!r}.", ""]
    if about:
        lines += ["## Training", ""] + [f"- {k}: {v}" for k, v in about.items()] + [""]
    if details is not None and details.recipe:
        lines += ["## Training recipe", ""] + [f"- {k}: {v}" for k, v in details.recipe.items()] + [""]
    if details is not None and details.data:
        lines += ["## Data", ""] + [f"- {k}: {v}" for k, v in details.data.items()] + [""]
    if details is not None and details.metrics:
        lines += _metrics_lines(details.metrics)
    lines += ["## Use", "", "```python", "from sentence_transformers import SentenceTransformer", "",
              "model = SentenceTransformer(\"path/to/this/folder\")",
              "q = model.encode_query([\"Where is the Eiffel Tower?\"])          # adds the query prefix",
              "d = model.encode_document([\"The Eiffel Tower is in Paris.\"])    # adds the passage prefix",
              "scores = model.similarity(q, d)", "```", "",
              "`model.encode(texts)` uses the query prefix (the default prompt); pass `prompt_name=\"passage\"` "
              "for passages. hybridnb itself: `hybridnb.models.Encoder.from_pretrained(\"path/to/this/folder\")`.",
              ""]
    if details is not None and details.cite:
        lines += ["## Citation", "", "Hybrid batch training (Elmahdy, Lin, Ahmad 2024):", "", "```bibtex",
                  PAPER_CITATION, "```", ""]
    return "\n".join(lines)
