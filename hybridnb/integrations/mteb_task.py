"""The pooled LAReQA setting as an mteb retrieval task, built in code from a :class:`RetrievalTask` (no hub data).

Pooled = LAReQA's multilingual setting: every question against the candidates of *all* languages, relevant
= its answer sentence in every language (:mod:`hybridnb.data.lareqa`). The task has one mteb subset per
question language (subset ``"en"``: the English questions against the whole pool), so mteb's per-subset numbers
are hybridnb's per-language ``multi`` numbers and their mean over subsets is hybridnb's macro average over
question languages (:mod:`hybridnb.evaluation.metrics`). The price: mteb encodes the pool once per subset.

    import mteb
    from hybridnb.data import lareqa
    task = lareqa_mteb_task(lareqa.load_task("xquad-r"))
    results = mteb.evaluate(model, task, cache=None)   # any SentenceTransformer / mteb model

What agrees with hybridnb, and what stays hybridnb's (tests/test_integrations.py checks the first):

* ``recall_at_1`` / ``recall_at_10`` are hybridnb's ``multi`` R@1 / R@10 (the share of a question's relevant
  candidates ranked in the top k of the pool), rounded by mteb to 5 decimals. Ties are broken the same way:
  mteb and trec_eval rank equal scores by document id, descending; the ids here (``d<N-1-cid>``, zero-padded)
  make that candidate order, ascending, as hybridnb does.
* mteb cuts rankings at its largest k (1000): ``map_at_1000`` is LAReQA's full-pool mAP only when the pool
  holds at most 1000 candidates (XQuAD-R has 13,014). Full-pool mAP, the mono and cross settings and rank
  distance stay hybridnb's (:class:`hybridnb.integrations.st_evaluator.LAReQAEvaluator`,
  :func:`hybridnb.evaluation.runner.evaluate_encoder`).
* mteb scores with the model's similarity (cosine for a folder that :meth:`hybridnb.models.Encoder.save`
  wrote with ``normalize=True``), hybridnb with the inner product: equal for normalised embeddings.
* Candidates are sentences only: an mteb document is one text (a ``title`` is joined to it as a string, not
  tokenised as a pair), so LAReQA's ``sentence+context`` input cannot be reproduced in mteb.
"""

from __future__ import annotations

from collections.abc import Mapping

from hybridnb.data.retrieval_task import RetrievalTask

__all__ = ["ISO_LANGUAGES", "LAREQA_CITATION", "lareqa_mteb_task", "corpus_id"]

#: LAReQA's language codes (and a few more) as mteb's ``language-Script`` tags
ISO_LANGUAGES = {"ar": "ara-Arab", "de": "deu-Latn", "el": "ell-Grek", "en": "eng-Latn", "es": "spa-Latn",
                 "hi": "hin-Deva", "ru": "rus-Cyrl", "th": "tha-Thai", "tr": "tur-Latn", "vi": "vie-Latn",
                 "zh": "zho-Hans", "fr": "fra-Latn", "it": "ita-Latn", "ja": "jpn-Jpan", "ko": "kor-Kore",
                 "pt": "por-Latn", "nl": "nld-Latn", "id": "ind-Latn"}

LAREQA_CITATION = """@inproceedings{roy-etal-2020-lareqa,
  title = {{LAReQA}: Language-Agnostic Answer Retrieval from a Multilingual Pool},
  author = {Roy, Uma and Constant, Noah and Al-Rfou, Rami and Barua, Aditya and Phillips, Aaron and Yang, Yinfei},
  booktitle = {Proceedings of the 2020 Conference on Empirical Methods in Natural Language Processing (EMNLP)},
  year = {2020},
  pages = {5919--5930},
}"""

_LICENCES = {"xquad-r": "cc-by-sa-4.0", "mlqa-r": "cc-by-nc-4.0"}


def corpus_id(cid: int, n_candidates: int) -> str:
    """The mteb document id of candidate ``cid``: descending id order = ascending cid (the tie-break)."""
    return f"d{n_candidates - 1 - cid:0{len(str(max(n_candidates - 1, 0)))}d}"


def lareqa_mteb_task(task: RetrievalTask, name: str | None = None,
                     iso_languages: Mapping[str, str] | None = None):
    """An mteb ``AbsTaskRetrieval`` instance of the pooled setting of ``task`` (data in memory, split ``test``).

    ``iso_languages`` maps the task's language codes to mteb tags (default :data:`ISO_LANGUAGES`); an
    unknown code is a ValueError. ``name`` defaults to ``"LAReQA-<task name>-pooled"``. Needs mteb
    (``pip install hybridnb[mteb]``).
    """
    try:
        import datasets
        from mteb.abstasks.retrieval import AbsTaskRetrieval
        from mteb.abstasks.task_metadata import TaskMetadata
    except ImportError as err:
        raise ImportError("the mteb task needs mteb: pip install 'hybridnb[mteb]'") from err

    iso = dict(ISO_LANGUAGES if iso_languages is None else iso_languages)
    unknown = [g for g in task.languages if g not in iso]
    if unknown:
        raise ValueError(f"no mteb language tag for {unknown}: pass iso_languages={{code: 'xxx-Scrp'}}")
    name = name or f"LAReQA-{task.name}-pooled"
    tags = [iso[g] for g in task.languages]

    metadata = TaskMetadata(
        name=name,
        description=(f"LAReQA's pooled setting on {task.name} (Roy et al. 2020): every question against the "
                     f"candidate sentences of all {len(task.languages)} languages; relevant = its answer sentence "
                     "in every language. One subset per question language. Built in code by hybridnb."),
        reference="https://arxiv.org/abs/2004.05484",
        dataset={"path": f"hybridnb/{task.name}", "revision": "in-memory"},
        type="Retrieval",
        category="t2t",
        modalities=["text"],
        eval_splits=["test"],
        eval_langs={g: [iso[g]] + [t for t in tags if t != iso[g]] for g in task.languages},
        main_score="recall_at_10",
        date=("2020-01-01", "2020-12-31"),
        domains=["Encyclopaedic", "Written"],
        task_subtypes=["Question answering"],
        license=_LICENCES.get(task.name, "not specified"),
        annotations_creators="human-annotated",
        dialect=[],
        sample_creation="found",
        bibtex_citation=LAREQA_CITATION,
    )

    def load_data(self, num_proc: int | None = None, **kwargs) -> None:
        if self.data_loaded:
            return
        n = task.num_candidates
        doc_ids = [corpus_id(c, n) for c in range(n)]
        corpus = datasets.Dataset.from_dict({"id": doc_ids, "text": task.candidate_inputs("sentence")})
        qids, texts, langs = (list(task.questions[c]) for c in ("qid", "text", "lang"))
        self.dataset = {}
        for g in task.languages:
            rows = [i for i, lang in enumerate(langs) if lang == g]
            queries = datasets.Dataset.from_dict({"id": [qids[i] for i in rows], "text": [texts[i] for i in rows]})
            relevant = {qids[i]: {doc_ids[int(c)]: 1 for c in task.relevant(i)} for i in rows}
            self.dataset[g] = {"test": {"queries": queries, "corpus": corpus, "relevant_docs": relevant,
                                        "top_ranked": None}}
        self.data_loaded = True

    cls = type("LAReQAPooledTask", (AbsTaskRetrieval,), {"metadata": metadata, "load_data": load_data,
                                                         "__doc__": metadata.description})
    return cls()
