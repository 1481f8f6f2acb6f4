"""Write the tiny MIRACL-shaped local copy the ci profile evaluates (notebook 09, tests/test_miracl.py).

    HYBRIDNB_MIRROR=/path/to/mirror python tests/data/miracl/make_miracl_sample.py

MIRACL itself needs the Hugging Face hub, so the ci profile runs notebook 09 on a stand-in of the same shape
built from XQuAD-R (LAReQA, CC BY-SA 4.0; the raw files come through hybridnb.data.sources, checked by
sha256), deterministically: per language, the first two paragraphs of the first 16 articles; every sentence
is a passage (docid ``<article>#<paragraph>.<sentence>``, title = the article's title), the first question of
each paragraph is a query, its answer sentence is judged relevant (1) and the paragraph's other sentences are
judged not relevant (0), like MIRACL's judged pool. Two layouts of the local copy are written, so both readers
of hybridnb.data.miracl run in ci:

* ``es/``: ``corpus.jsonl`` + ``dev.jsonl`` (the hub's dev rows: query_id, query, positive_passages,
  negative_passages);
* ``zh/``: ``corpus.jsonl`` + ``topics.tsv`` (qid<TAB>query) + ``qrels.tsv`` (TREC ``qid Q0 docid rel``).
"""

from __future__ import annotations

import json
from pathlib import Path

from hybridnb.data import lareqa_files, sources

HERE = Path(__file__).resolve().parent
LANGUAGES = ("es", "zh")
ARTICLES, PARAGRAPHS = 16, 2


def sample(lang: str):
    raw = sources.fetch("xquad-r", [lang]) / f"{lang}.json"
    titles = [a["title"].replace("_", " ") for a in json.loads(raw.read_text(encoding="utf-8"))["data"]]
    corpus, queries = [], []
    for para in lareqa_files.parse_file(raw, lang):
        _, ai, pi = para.key.split("/")
        ai, pi = int(ai), int(pi)
        if ai >= ARTICLES or pi >= PARAGRAPHS:
            continue
        docids = [f"{ai}#{pi}.{si}" for si in range(len(para.sentences))]
        for docid, sentence in zip(docids, para.sentences):
            corpus.append({"docid": docid, "title": titles[ai], "text": sentence.strip().lstrip("\ufeff")})
        q = para.questions[0]
        queries.append((q.id, q.text.strip(), docids[q.answer_sentence],
                        [d for i, d in enumerate(docids) if i != q.answer_sentence]))
    return corpus, queries


def write_jsonl(path: Path, rows) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def main() -> None:
    for lang in LANGUAGES:
        corpus, queries = sample(lang)
        out = HERE / lang
        out.mkdir(exist_ok=True)
        write_jsonl(out / "corpus.jsonl", corpus)
        by_id = {p["docid"]: p for p in corpus}
        if lang == "es":
            write_jsonl(out / "dev.jsonl", [{"query_id": q, "query": text, "positive_passages": [by_id[pos]],
                                             "negative_passages": [by_id[d] for d in negs]}
                                            for q, text, pos, negs in queries])
        else:
            (out / "topics.tsv").write_text("".join(f"{q}\t{text}\n" for q, text, _, _ in queries), encoding="utf-8")
            (out / "qrels.tsv").write_text("".join(f"{q}\tQ0\t{pos}\t1\n" + "".join(f"{q}\tQ0\t{d}\t0\n" for d in negs)
                                                   for q, _, pos, negs in queries), encoding="utf-8")
        print(f"{lang}: {len(corpus)} passages, {len(queries)} queries -> {out}")


if __name__ == "__main__":
    main()
