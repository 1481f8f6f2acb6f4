"""Notebook 09 and ``python -m hybridnb miracl``: MIRACL dev, the paper's third benchmark (its Tables 12-13),
for the profile's untrained model(s) and every finished training run of the profile.

What runs: for each backbone of ``miracl_backbones`` (null: the profile's own ``model``), its zero-shot start
and its finished run of each strategy of ``strategies`` (runs are never trained here: notebook 03 / 06 train
them, a missing one is listed, not silently dropped), each on every language of ``miracl_languages``:

1. the language's data (:mod:`hybridnb.data.miracl`: the hub once or a local copy, cached as Arrow), checked
   for every language before any encoding;
2. the corpus encoded in shards of ``miracl_shard_size`` passages (:class:`hybridnb.evaluation.CorpusIndex`,
   under ``cache/miracl/index/``), stored as ``miracl_dtype``, resumable; under ``torchrun`` every process
   encodes its own shards (rank r: r, r + W, ...), then waits at a barrier;
3. on process 0 only: the queries encoded, the top ``miracl_top_k`` passages searched with faiss
   (``miracl_index``: exact ``flat``, or ``ivf`` / ``hnsw``), nDCG@10 and Recall@100 per query by trec_eval
   (:mod:`hybridnb.evaluation.trec_metrics`), bootstrap CIs over queries per language and for the macro average
   over languages (the paper's "mean"), written to ``reports/<profile>/miracl/<system>/`` (``results.json``,
   ``per_query.npz``, ``results.md``) atomically; the TREC run files go beside the embeddings.

A system whose results on disk match (same model identity, settings, corpora and bootstrap) is reused. The
paper's rows (:func:`hybridnb.studies.paper_numbers.load_miracl`) are printed beside ours for the same
languages, in ``reports/<profile>/MIRACL.md`` and in REPORT.md's MIRACL section (:func:`report_section`).

Passages are encoded as ``miracl_passage_format``: ``"title text"`` (E5's and mContriever's MIRACL recipe: one
string; the encoder adds its own passage prefix, ``"passage: "`` for E5) by default, or ``(title, text)`` pairs
(mDPR's). Each encoder's token limit is the profile's ``max_length``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hybridnb import config, paths, reporting
from hybridnb.data import miracl
from hybridnb.data.languages import check_languages
from hybridnb.evaluation import dense_search, stats, trec_metrics
from hybridnb.evaluation.corpus_index import CorpusIndex, encoder_dim
from hybridnb.models import backbones, precision
from hybridnb.paths import cache_root, reports_root
from hybridnb.studies import backbone_study, compare, paper_numbers, runs, seed_tables, zero_shot
from hybridnb.training import distributed, run_folder

__all__ = ["PARAMETERS", "SCHEMA", "NOT_RUN", "Settings", "System", "check_settings", "plan", "result_dir",
           "index_dir", "find", "run", "systems_of", "source_line", "collect_saved", "results_table", "paper_table",
           "significance", "report_markdown", "write_report", "report_section", "plot_languages", "notebook_parameters"]

#: the profile keys of this study (notebook 09's parameters besides the run keys)
PARAMETERS = ("miracl_languages", "miracl_local", "miracl_backbones", "miracl_index", "miracl_top_k",
              "miracl_shard_size", "miracl_dtype", "miracl_passage_format")
SCHEMA = "hybridnb.miracl/1"
METRICS = tuple(trec_metrics.MEASURES)  # ndcg@10, recall@100
NOT_RUN = "MIRACL: not run (needs network or a local copy; see docs/miracl.md)"
_REMAKE = "run python -m hybridnb miracl (or notebook 09) to compute it again"  # a result that fails its manifest


Settings = config.MiraclConfig


def check_settings(params: dict[str, Any]) -> Settings:
    """Every ``miracl_*`` setting, checked before any data or model is touched (ValueError naming the key): each
    key's type and bounds by the typed config's fields, then the languages, backbones and index."""
    missing = [k for k in PARAMETERS if k not in params]
    if missing:
        raise ValueError(f"the profile lacks {missing} (MIRACL settings; see hybridnb.config.PARAMETERS)")
    values = {k.removeprefix("miracl_"): params[k] for k in PARAMETERS}
    values["in_reproduce"] = params.get("miracl_in_reproduce", False)
    config.check_fields(Settings, values, name=lambda key: f"miracl_{key}")
    values["languages"] = check_languages(values["languages"] if values["languages"] is not None
                                          else list(miracl.PAPER_LANGUAGES), miracl.MIRACL_LANGUAGES, "MIRACL")
    if values["local"] is not None and not values["local"].strip():
        raise ValueError(f"miracl_local must be a folder (a string) or null, got {values['local']!r}")
    if values["backbones"] is not None:
        if not values["backbones"]:
            raise ValueError("miracl_backbones must be a non-empty list of backbones or null, got []")
        for name in values["backbones"]:
            if backbones.get_backbone(name).family != "dense":  # unknown names fail here too
                raise ValueError(f"miracl_backbones: {name} is lexical, not a dense encoder (no corpus embeddings)")
    kind, index_params = dense_search.check_index(values["index"])
    values["index"] = {"type": kind, "params": index_params}
    return Settings(**values)


# ---- the systems ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class System:
    """One model evaluated on MIRACL: an untrained start or a finished training run."""

    label: str              # "zero-shot", "X-X-mono", ...; "<backbone> hybrid" for a backbone other than the model's
    kind: str               # "zero-shot" | "trained"
    model: str              # what is loaded: a model name (zero-shot) or the run's best encoder folder
    identity: str           # what the embeddings depend on: the model name, or the run name and its config hash
    slug: str               # its folder under reports/<profile>/miracl/
    backbone: str | None = None
    strategy: Any = None
    run_name: str | None = None
    config_hash: str | None = None


def plan(params: dict[str, Any], settings: Settings | None = None) -> tuple[list[System], list[str]]:
    """(the systems to evaluate, one line per planned run that cannot be: not trained, or its weights gone)."""
    settings = settings or check_settings(params)
    systems, notes = [], []
    for backbone in settings.backbones or [None]:
        model = params["model"] if backbone is None else backbone_study.model_name(backbone, params)
        tag = "" if model == params["model"] else f"{backbones.get_backbone(backbone).name} "
        systems.append(System(f"{tag}zero-shot", "zero-shot", model, model, zero_shot.folder_name(model), backbone))
        for strategy in params.get("strategies") or [params["strategy"]]:
            run_params = ({**params, "strategy": strategy, "run_name": None} if not tag
                          else backbone_study.finetune_params(params, backbone, strategy))
            cfg = runs.check_run(run_params)
            label = tag + compare.system_label(strategy)
            results = runs.find_finished(cfg)
            if results is None:
                notes.append(f"{label}: no finished run {cfg.run_name} (config {cfg.hash}); train it first "
                             "(notebook 03 / 06, python -m hybridnb train)")
                continue
            best = results.get("model", {}).get("best_dir")
            best = best and str(paths.resolve_shown(best))
            if not best or not Path(best).is_dir():
                notes.append(f"{label}: run {cfg.run_name} is finished but its encoder is not on this machine ({best})")
                continue
            systems.append(System(label, "trained", best, f"run {cfg.run_name} {cfg.hash}", cfg.run_name, backbone,
                                  strategy, cfg.run_name, cfg.hash))
    return systems, notes


def result_dir(profile: str, system: System) -> Path:
    return reports_root() / profile / "miracl" / system.slug


def index_dir(data: miracl.MiraclLanguage, system: System) -> Path:
    """The system's corpus embeddings for one language: keyed by the corpus and the model's identity."""
    key = hashlib.sha256(f"{data.fingerprint}|{system.identity}".encode()).hexdigest()[:12]
    return cache_root() / "miracl" / "index" / data.lang / f"{system.slug}-{key}"


def _load_encoder(system: System, max_length: int):
    from hybridnb.models.encoders import Encoder

    if system.kind == "trained":
        return Encoder.from_pretrained(system.model, max_length=max_length)
    try:
        spec = backbones.get_backbone(system.model)
    except ValueError:  # any other model: a hub id or a folder
        return Encoder.from_pretrained(system.model, max_length=max_length)
    return backbones.load_backbone(spec.name, max_length=max_length)


def _record(params: dict, settings: Settings, system: System, data: dict[str, miracl.MiraclLanguage]) -> dict:
    """What identifies a MIRACL result: reused only when all of it matches."""
    return {"identity": system.identity, "max_length": params["max_length"],
            "encode_dtype": precision.resolve(params["encode_dtype"]), "passage_format": settings.passage_format,
            "storage_dtype": settings.dtype, "top_k": settings.top_k, "index": settings.index,
            "languages": {lang: {"corpus_sha256": d.fingerprint, "n_passages": d.n_passages,
                                 "n_queries": len(d.queries)} for lang, d in data.items()},
            "n_resamples": params["n_resamples"], "seed": params["seed"], "metrics": list(METRICS)}


def find(out_dir: Path, record: dict) -> dict | None:
    """Saved results in ``out_dir`` with the same record (and per-query file), not older than the fresh cutoff."""
    record = json.loads(json.dumps(record))  # as results.json holds it (tuples as lists)
    return run_folder.saved_results(out_dir, _REMAKE, lambda saved: saved.get("record") == record,
                                    lambda saved: ["per_query.npz"])


def _entry(value, ci: dict) -> dict:
    return {"value": value, "ci": [ci.get("low"), ci.get("high")], "se": ci.get("se")}


def _write_run(path: Path, query_ids, rows, scores, data: miracl.MiraclLanguage) -> None:
    """The top-k lists as a TREC run file (``qid Q0 docid rank score hybridnb``), gzipped, for trec_eval itself."""
    docids = data.docids(rows)
    k = rows.shape[1]
    with reporting.atomic_path(path) as tmp, gzip.open(tmp, "wt", encoding="utf-8") as f:
        for j, qid in enumerate(query_ids):
            for c in range(k):
                if rows[j, c] >= 0:
                    f.write(f"{qid} Q0 {docids[j * k + c]} {c + 1} {float(scores[j, c]):.6f} hybridnb\n")


def _evaluate(params: dict, settings: Settings, system: System, data: dict[str, miracl.MiraclLanguage],
              record: dict, show_progress: bool) -> tuple[dict, trec_metrics.TrecResult] | None:
    """Encode (every process its shards), search and score (process 0): (results, per-query) on process 0."""
    start = time.time()
    with distributed.main_first():  # a first use may convert or download the model into the cache
        encoder = _load_encoder(system, params["max_length"])
    encode_kwargs = {"autocast_dtype": precision.encode_arg(params["encode_dtype"])}
    batch = params["encode_batch_size"]
    parts, timings, languages = {}, {}, {}
    rank, world = distributed.rank(), distributed.world_size()
    for lang, d in data.items():
        folder = index_dir(d, system)
        inputs = {"passage_format": settings.passage_format, "max_length": params["max_length"],
                  "encode_dtype": record["encode_dtype"]}
        with distributed.main_first():  # rank 0 creates or rebuilds the index folder, then the others check it
            index = CorpusIndex.open(folder, model=system.identity, corpus=d.fingerprint, n_passages=d.n_passages,
                                     dim=encoder_dim(encoder), shard_size=settings.shard_size, dtype=settings.dtype,
                                     inputs=inputs)
        done = index.encode(encoder, d.passages(settings.passage_format), batch, show_progress, encode_kwargs,
                            rank, world)
        distributed.barrier()  # every shard written before process 0 searches
        if rank != 0:
            continue
        t0 = time.perf_counter()
        q_emb = np.asarray(encoder.encode(d.queries, role="query", batch_size=batch, show_progress=False,
                                          **encode_kwargs), dtype=np.float32)
        t1 = time.perf_counter()
        scores, rows = dense_search.search(index, q_emb, settings.top_k, settings.index, show_progress)
        t2 = time.perf_counter()
        _write_run(folder / f"run.top{settings.top_k}.trec.gz", d.query_ids, rows, scores, d)
        values = trec_metrics.per_query(d.qrels, trec_metrics.run_dict(d.query_ids, rows, scores, d.docids),
                                        d.query_ids, METRICS)
        parts[lang] = (d.query_ids, values)
        timings[lang] = {"encode_corpus_s": done["seconds"], "passages_encoded": done["passages"],
                         "encode_queries_s": t1 - t0, "search_s": t2 - t1, "metrics_s": time.perf_counter() - t2}
        languages[lang] = {"n_queries": len(d.queries), "n_passages": d.n_passages,
                           "dropped_queries": d.meta.get("dropped_queries", 0),
                           "judged_not_in_corpus": d.meta.get("judged_not_in_corpus", 0)}
    if rank != 0:
        return None
    result = trec_metrics.from_languages(parts, {"system": system.label})
    n, seed = params["n_resamples"], params["seed"]
    t0 = time.perf_counter()
    macro = stats.confidence_intervals(result, n_resamples=n, seed=seed)
    for lang in data:
        cis = stats.confidence_intervals(result.subset(lang), n_resamples=n, seed=seed)
        summary = result.summary()["per_language"][lang]
        languages[lang].update({m: _entry(summary[m], cis["mono"][m]) for m in METRICS})
    summary = result.summary()["macro"]
    source = next(iter(data.values())).meta.get("source", {})
    results = {
        "schema": SCHEMA, "kind": "miracl", "profile": params["profile"],
        "system": {"label": system.label, "kind": system.kind, "backbone": system.backbone,
                   "strategy": system.strategy, "run_name": system.run_name, "config_hash": system.config_hash},
        "model": {"name": system.model if system.kind == "zero-shot" else paths.shown(system.model),
                  "identity": system.identity, "max_length": params["max_length"],
                  "encode_dtype": record["encode_dtype"], "passage_format": settings.passage_format},
        "settings": {"languages": list(data), "top_k": settings.top_k, "index": settings.index,
                     "storage_dtype": settings.dtype, "shard_size": settings.shard_size,
                     "metric_library": trec_metrics.library_version(),
                     "source": {"kind": source.get("kind"),
                                "local": paths.shown(miracl.local_root(settings.local))
                                if source.get("kind") == "local" else None,
                                "hub": {k: source.get(k) for k in ("queries", "corpus")} if source.get("kind") == "hub"
                                else None}},
        "record": record, "provenance": reporting.provenance(params["profile"]),
        "bootstrap": {"unit": "query", "n_resamples": n, "confidence": 0.95, "seed": seed,
                      "method": macro["method"]},
        "macro": {m: _entry(summary[m], macro["mono"][m]) for m in METRICS},
        "languages": languages,
        "timings": {"wall_s": time.time() - start, "bootstrap_s": time.perf_counter() - t0, **timings,
                    "processes": world},
    }
    return results, result


def _write(out_dir: Path, results: dict, result: trec_metrics.TrecResult) -> None:
    rows = [{"language": lang, **{m: reporting.format_ci(b[m]) for m in METRICS}, "queries": b["n_queries"],
             "passages": b["n_passages"]} for lang, b in results["languages"].items()]
    rows.append({"language": "mean", **{m: reporting.format_ci(results["macro"][m]) for m in METRICS},
                 "queries": sum(b["n_queries"] for b in results["languages"].values()), "passages": ""})
    run_folder.write_result_folder(out_dir, results, f"MIRACL dev: {results['system']['label']} "
                                   f"({results['model']['name']})", rows, files={"per_query.npz": result.save})


def run(params: dict[str, Any], show_progress: bool = True, announce: bool = False) -> dict[str, dict]:
    """Evaluate every system of :func:`plan` (reusing matching results); on process 0
    ``{label: {"results", "dir", "per_query": TrecResult}}`` plus ``"_notes"`` (runs that could not be
    evaluated), on the other processes ``{}``. Everything is checked before the first long step."""
    settings = check_settings(params)
    config.check_encode_dtype(params["encode_dtype"])
    systems, notes = plan(params, settings)
    distributed.init()
    rank = distributed.rank()
    with distributed.main_first():  # process 0 builds the Arrow caches, the others read them
        miracl.check_available(settings.languages, settings.local)  # every language, before any long work
        data = miracl.load(settings.languages, settings.local, show_progress=show_progress and rank == 0)
    collected: dict[str, Any] = {}
    for system in systems:
        out_dir = result_dir(params["profile"], system)
        record = _record(params, settings, system, data)
        saved = find(out_dir, record) if rank == 0 else None
        if distributed.broadcast_object(saved is not None):
            if announce and rank == 0:
                print(f"[hybridnb] MIRACL {system.label}: reusing {paths.shown(out_dir)}", flush=True)
            if rank == 0:
                collected[system.label] = {"results": saved, "dir": out_dir,
                                           "per_query": trec_metrics.TrecResult.load(out_dir / "per_query.npz")}
            continue
        if announce and rank == 0:
            print(f"[hybridnb] MIRACL {system.label}: encoding {sum(d.n_passages for d in data.values())} passages "
                  f"in {len(data)} language(s) ...", flush=True)
        got = _evaluate(params, settings, system, data, record, show_progress)
        if got is not None:
            results, result = got
            _write(out_dir, results, result)
            collected[system.label] = {"results": results, "dir": out_dir, "per_query": result}
        distributed.barrier()
    if rank == 0:
        collected["_notes"] = notes
    return collected


def systems_of(collected: dict) -> dict[str, dict]:
    return {k: v for k, v in collected.items() if not k.startswith("_")}


def collect_saved(profile: str) -> dict[str, dict]:
    """Every MIRACL result written for ``profile`` (reports/<profile>/miracl/*/results.json), by system label."""
    out = {}
    for path in sorted((reports_root() / profile / "miracl").glob("*/results.json")):
        results = run_folder.saved_results(path.parent, _REMAKE, lambda saved: saved.get("schema") == SCHEMA,
                                           reuse=False)
        if results is not None:
            out[results["system"]["label"]] = {"results": results, "dir": path.parent}
    return dict(sorted(out.items(), key=lambda kv: (kv[1]["results"]["system"]["kind"] != "zero-shot", kv[0])))


# ---- tables and the report --------------------------------------------------------------------------------


def results_table(collected: dict) -> pd.DataFrame:
    """Rows: systems; columns: nDCG@10 and Recall@100 macro averages (95% CI), then nDCG@10 per language."""
    rows = {}
    for label, sys in systems_of(collected).items():
        res = sys["results"]
        row = {f"{m} mean": reporting.format_ci(res["macro"][m]) for m in METRICS}
        row.update({f"ndcg@10 {lang}": reporting.format_ci(b["ndcg@10"], ci=False)
                    for lang, b in res["languages"].items()})
        rows[label] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def paper_table(languages, path=paper_numbers.PAPER_NUMBERS) -> pd.DataFrame:
    """The paper's Tables 12-13 for ``languages`` (those it has): per model and strategy, nDCG@10 and Recall@100
    per language and their mean over exactly these languages (so it lines up with ours), plus its printed
    15-language mean."""
    frame = paper_numbers.load_miracl(path)
    if frame.empty:
        return pd.DataFrame()
    langs = [lang for lang in languages if lang in paper_numbers.MIRACL_LANGUAGES]
    rows = []
    for (table, model, strategy), group in frame.groupby(["table", "model", "strategy"], sort=False):
        cells = group.set_index(["metric", "language"]).value
        row = {"model": model, "system": paper_numbers.LABELS[strategy], "source": f"Table {table}"}
        for m in METRICS:
            if langs:
                row[f"{m} mean ({', '.join(langs)})"] = f"{np.mean([cells[(m, x)] for x in langs]):.4f}"
            row[f"{m} mean (15)"] = f"{cells[(m, 'mean')]:.4f}"
        row.update({f"ndcg@10 {x}": f"{cells[('ndcg@10', x)]:.4f}" for x in langs})
        rows.append(row)
    order = {s: i for i, s in enumerate(paper_numbers.STRATEGIES)}
    rows.sort(key=lambda r: (r["source"], order.get(next(k for k, v in paper_numbers.LABELS.items()
                                                          if v == r["system"]), 9)))
    return pd.DataFrame(rows)


def significance(collected: dict, n_resamples: int = 1000, seed: int = 0, target: str = "hybrid") -> pd.DataFrame:
    """Each backbone's ``target`` run minus every other system of that backbone (its zero-shot start and other
    strategies), query by query: difference of the macro averages, 95% paired bootstrap CI and paired
    permutation p-value (:func:`hybridnb.evaluation.stats.compare`)."""
    def per_query(sys):
        return sys.get("per_query") or trec_metrics.TrecResult.load(sys["dir"] / "per_query.npz")

    systems = systems_of(collected)
    rows = []
    for label, sys in systems.items():
        me = sys["results"]["system"]
        if me.get("strategy") != target:
            continue
        a = per_query(sys)
        for other, osys in systems.items():
            them = osys["results"]["system"]
            if other == label or them.get("backbone") != me.get("backbone"):
                continue
            b = per_query(osys)
            if list(a.languages) != list(b.languages) or not np.array_equal(a.q_group, b.q_group):
                continue  # other languages or queries: not a paired comparison
            cmp = stats.compare(a, b, n_resamples=n_resamples, seed=seed)
            for m in METRICS:
                e = cmp["mono"][m]
                rows.append({"system": label, "baseline": other, "metric": m, "diff": e["diff"], "low": e["low"],
                             "high": e["high"], "p_value": e["p_value"], "n_resamples": n_resamples})
    return pd.DataFrame(rows)


def source_line(collected: dict) -> str:
    res = next(iter(systems_of(collected).values()))["results"]
    src = res["settings"]["source"]
    if src.get("kind") == "local":
        where = f"the local copy `{src.get('local')}`"
        if str(src.get("local", "")).endswith("tests/data/miracl"):
            where += " (the ci stand-in built from XQuAD-R, not MIRACL: it checks the path, not the paper's numbers)"
    else:
        hub = src.get("hub") or {}
        where = "the Hugging Face hub (" + ", ".join(f"{v.get('repo')}@{str(v.get('revision'))[:7]}"
                                                      for v in hub.values() if v) + ")"
    s = res["settings"]
    return (f"Data: MIRACL dev from {where}; languages {', '.join(s['languages'])}; top {s['top_k']} by "
            f"{s['index']['type']} inner-product search ({s['storage_dtype']} embeddings); nDCG@10 and Recall@100 by "
            f"{s['metric_library']}; 95% CIs: bootstrap over queries ({res['bootstrap']['n_resamples']} "
            "resamples), the mean is the macro average over languages.")


def _table_lines(collected: dict, paper_path) -> list[str]:
    ours = results_table(collected)
    lines = ["Ours:", "", reporting.markdown_table(ours.reset_index(names="system").to_dict("records"))]
    languages = next(iter(systems_of(collected).values()))["results"]["settings"]["languages"]
    paper = paper_table(languages, paper_path)
    if not paper.empty:
        lines += ["The paper's (Tables 12-13: XLM-R and LaBSE fine-tuned on its own data, transcribed by hand; its "
                  "setup differs from this profile's, so compare directions, not values; the mean over this "
                  "profile's languages is computed here from its per-language values):", "",
                  reporting.markdown_table(paper.to_dict("records"))]
    return lines


def report_markdown(params: dict, collected: dict, sig: pd.DataFrame, prov: dict, figures=(),
                    paper_path=paper_numbers.PAPER_NUMBERS) -> str:
    """reports/<profile>/MIRACL.md: what ran, our table, the paper's rows beside it, hybrid's paired tests."""
    lines = ["# MIRACL dev (notebook 09)", "", reporting.stamp(prov), ""]
    if not systems_of(collected):
        return "\n".join(lines + [NOT_RUN, ""])
    lines += [source_line(collected), ""] + _table_lines(collected, paper_path)
    if sig is not None and not sig.empty:
        rows = [{"system": r.system, "baseline": r.baseline, "metric": r.metric,
                 "difference [95% CI]": reporting.interval(r.diff, r.low, r.high, 4, sign=True),
                 "p": compare.p_text(r.p_value, r.n_resamples)} for r in sig.itertuples()]
        lines += ["Hybrid minus each baseline (paired over queries):", "", reporting.markdown_table(rows)]
    notes = collected.get("_notes") or []
    if notes:
        lines += ["Not evaluated:", ""] + [f"- {n}" for n in notes] + [""]
    lines += [f"![{Path(f).stem}]({f})" for f in figures]
    return "\n".join(lines) + "\n"


def write_report(params: dict, collected: dict, sig: pd.DataFrame | None = None, figures=()) -> Path:
    """Write reports/<profile>/MIRACL.md (``figures`` relative to that folder); the paired tests are computed
    here unless given. Notebook 09 and ``python -m hybridnb miracl`` both end with it."""
    if sig is None:
        sig = significance(collected, params["n_resamples"], params["seed"])
    profile = params["profile"]
    return reporting.write_text(reports_root() / profile / "MIRACL.md",
                                report_markdown(params, collected, sig, reporting.provenance(profile), figures))


def report_section(profile: dict, paper_path=paper_numbers.PAPER_NUMBERS) -> list[str]:
    """REPORT.md's MIRACL section: our results beside the paper's rows when notebook 09 ran for this profile,
    else the line saying it did not (:data:`NOT_RUN`)."""
    collected = collect_saved(profile["profile"])
    lines = ["## MIRACL dev (notebook 09)", ""]
    if not collected:
        return lines + [NOT_RUN, ""]
    return lines + [source_line(collected), ""] + _table_lines(collected, paper_path) + \
        [f"Details and paired tests: `{profile['profile']}/MIRACL.md`.", ""]


def plot_languages(collected: dict, title: str):
    """nDCG@10 per language and system, with the 95% CI of each bar."""
    import matplotlib.pyplot as plt

    systems = systems_of(collected)
    languages = next(iter(systems.values()))["results"]["settings"]["languages"]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(languages) * len(systems) * 0.5 + 2), 3.6))
    cells = {label: [sys["results"]["languages"][x]["ndcg@10"] for x in languages] for label, sys in systems.items()}
    seed_tables.grouped_bars(ax, *(pd.DataFrame({label: [pick(e) for e in es] for label, es in cells.items()},
                                                index=languages)
                                   for pick in (lambda e: e["value"], lambda e: e["ci"][0], lambda e: e["ci"][1])))
    ax.set(ylabel="nDCG@10", ylim=(0, 1), title=title)
    ax.legend(fontsize=7, ncol=min(4, len(systems)))
    fig.tight_layout()
    return fig


def notebook_parameters() -> tuple[str, ...]:
    """What notebook 09 declares: the run keys (to find the finished runs) and the MIRACL settings."""
    return (*runs.RUN_KEYS, "profile", "encode_batch_size", "strategies", *PARAMETERS)
