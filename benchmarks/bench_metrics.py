"""Benchmark of the LAReQA metric computation (hybridnb.evaluation.metrics) on data of full XQuAD-R shape.

Builds synthetic embeddings shaped like XQuAD-R (1,190 questions x 11 languages = 13,090 queries,
13,014 candidate sentences, 384-d, one relevant sentence per language per question id), times
`hybridnb.evaluation.metrics.evaluate` against a straightforward per-query loop of
`sklearn.metrics.average_precision_score` computing the same APs (mono, cross and multilingual pools),
checks that they agree to 1e-9, times the bootstrap CIs / paired comparison of `hybridnb.evaluation.stats`, and
writes JSON + Markdown reports.

The sklearn loop is slow (~0.1 s per query for its 12 pools), so by default it runs on a subset of
queries spread over all languages and its time is extrapolated linearly to all queries (the report says
so); ``--ref-queries 0`` runs it on every query.

    python benchmarks/bench_metrics.py [--out reports/benchmarks/metrics.json] [--ref-queries 550]

The functions are importable (``make_xquad_like``, ``time_evaluate``, ``time_reference``, ...) so that
other benchmarks (e.g. encoding time) can reuse them and add sections to the same report.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from hybridnb.evaluation.metrics import evaluate, reference_evaluate
from hybridnb.paths import reports_root

XQUAD_LANGS = ["ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh"]
TOLERANCE = 1e-9
AP_KEYS = ("mono_ap", "cross_ap", "multi_ap")


def make_xquad_like(n_questions: int = 1190, languages=XQUAD_LANGS, n_candidates: int = 13014, dim: int = 384,
                    noise: float = 2.0, lang_shift: float = 0.6, seed: int = 0) -> dict:
    """Synthetic retrieval problem of XQuAD-R shape.

    Every question id has a query in every language and one answer sentence per language. Candidate
    sentences are split evenly over the languages (so, as in XQuAD-R, a few sentences answer several
    questions). Embeddings = shared content vector + a per-language offset + noise, L2-normalised, so
    the metrics are neither trivial nor random and show some same-language bias.
    """
    rng = np.random.default_rng(seed)
    L = len(languages)
    per_lang = np.full(L, n_candidates // L)
    per_lang[: n_candidates % L] += 1
    offsets = np.concatenate([[0], np.cumsum(per_lang)])
    c_lang = np.repeat(np.arange(L), per_lang)
    n_sent = int(per_lang.max())
    content = rng.standard_normal((n_sent, dim)).astype(np.float32)
    shift = lang_shift * rng.standard_normal((L, dim)).astype(np.float32)
    # sentence s of language p: content s; question g maps to sentence g * n_p // n_questions
    sent = np.concatenate([np.arange(n) for n in per_lang])
    c_emb = content[sent] + shift[c_lang] + noise * rng.standard_normal((n_candidates, dim)).astype(np.float32)
    answer = np.stack([offsets[p] + np.arange(n_questions) * per_lang[p] // n_questions for p in range(L)], 1)
    q_group = np.tile(np.arange(n_questions), L)  # queries ordered language by language
    q_lang = np.repeat(np.arange(L), n_questions)
    q_sent = np.arange(n_questions)[q_group] * per_lang[q_lang] // n_questions
    q_emb = content[q_sent] + shift[q_lang] + noise * rng.standard_normal((len(q_group), dim)).astype(np.float32)
    q_emb /= np.linalg.norm(q_emb, axis=1, keepdims=True)
    c_emb /= np.linalg.norm(c_emb, axis=1, keepdims=True)
    indices = answer[q_group].ravel()  # one relevant per language, in language order
    indptr = np.arange(0, len(indices) + 1, L)
    return dict(q_emb=q_emb, c_emb=c_emb, q_lang=q_lang, c_lang=c_lang, relevant_indptr=indptr,
                relevant_indices=indices, languages=list(languages), q_group=q_group)


def _eval_args(data: dict) -> dict:
    keys = ("q_emb", "c_emb", "q_lang", "c_lang", "relevant_indptr", "relevant_indices", "languages", "q_group")
    return {k: data[k] for k in keys}


def time_evaluate(data: dict, repeats: int = 3, chunk_size: int = 512):
    """Run `evaluate` ``repeats`` times; returns (result, list of wall times in seconds)."""
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = evaluate(**_eval_args(data), chunk_size=chunk_size)
        times.append(time.perf_counter() - t0)
    return result, times


def reference_subset(n_queries: int, n_lang: int, per_lang: int, q_lang: np.ndarray) -> np.ndarray:
    """``per_lang`` evenly spaced queries of every language (all queries when per_lang * n_lang >= n)."""
    if per_lang * n_lang >= n_queries:
        return np.arange(n_queries)
    picks = []
    for x in range(n_lang):
        idx = np.nonzero(q_lang == x)[0]
        picks.append(idx[np.linspace(0, len(idx) - 1, min(per_lang, len(idx))).astype(int)])
    return np.sort(np.concatenate(picks))


def time_reference(data: dict, queries: np.ndarray):
    """Per-query sklearn AP loop (AP only) on ``queries``; returns (result, seconds)."""
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = reference_evaluate(**_eval_args(data), queries=queries, with_ranks=False)
    return result, time.perf_counter() - t0


def max_ap_difference(a, b, queries: np.ndarray) -> dict:
    """Largest absolute per-query AP difference on ``queries`` (NaN patterns must agree)."""
    out = {}
    for key in AP_KEYS:
        x, y = a.per_query[key][queries], b.per_query[key][queries]
        if not np.array_equal(np.isnan(x), np.isnan(y)):
            out[key] = float("inf")
        else:
            ok = ~np.isnan(x)
            out[key] = float(np.max(np.abs(x[ok] - y[ok]), initial=0.0))
    return out


def summary_difference(a, b) -> float:
    """Largest absolute difference of the macro mAPs and the mAP matrix of two full results."""
    sa, sb = a.summary(), b.summary()
    diffs = [abs(sa[s]["map"] - sb[s]["map"]) for s in ("mono", "cross", "multi")]
    ma, mb = np.array(sa["map_matrix"], dtype=float), np.array(sb["map_matrix"], dtype=float)
    diffs.append(float(np.nanmax(np.abs(ma - mb))))
    return float(max(diffs))


def time_stats(result, other, n_resamples: int = 1000) -> dict:
    from hybridnb.evaluation.stats import compare, confidence_intervals

    t0 = time.perf_counter()
    confidence_intervals(result, n_resamples=n_resamples)
    t1 = time.perf_counter()
    compare(result, other, n_resamples=n_resamples)
    t2 = time.perf_counter()
    return {"n_resamples": n_resamples, "confidence_intervals_s": t1 - t0, "compare_s": t2 - t1}


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def git_commit() -> str | None:
    """HEAD's commit, or None outside a git checkout."""
    return _git("rev-parse", "HEAD") or None


def git_dirty() -> bool | None:
    """Whether tracked files differ from HEAD (None if unknown)."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return None if status is None else bool(status)


def environment() -> dict:
    import scipy
    import sklearn

    env = {"python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
           "scikit-learn": sklearn.__version__, "machine": platform.machine(), "cpu_count": os.cpu_count(),
           "platform": platform.platform()}
    try:
        env["load_average_1m"] = os.getloadavg()[0]
    except OSError:
        pass
    return env


def run(ref_per_lang: int = 50, repeats: int = 3, n_resamples: int = 1000, seed: int = 0,
        with_stats: bool = True) -> dict:
    data = make_xquad_like(seed=seed)
    n_q, L = len(data["q_emb"]), len(data["languages"])
    result, eval_times = time_evaluate(data, repeats=repeats)
    queries = (np.arange(n_q) if ref_per_lang <= 0
               else reference_subset(n_q, L, ref_per_lang, data["q_lang"]))
    ref, ref_time = time_reference(data, queries)
    full_ref = len(queries) == n_q
    ref_full_time = ref_time * n_q / len(queries)
    diffs = max_ap_difference(result, ref, queries)
    report = {
        "benchmark": "metrics",
        "git_commit": git_commit(),
        "git_dirty": git_dirty(),
        "environment": environment(),
        "data": {"shape": "XQuAD-R (synthetic embeddings)", "n_queries": n_q, "n_candidates": len(data["c_emb"]),
                 "n_languages": L, "dim": int(data["q_emb"].shape[1]),
                 "relevant_per_query": int(np.diff(data["relevant_indptr"]).max()), "seed": seed},
        "evaluate": {"times_s": eval_times, "best_s": min(eval_times),
                     "computes": "AP, R@1, R@10 in 121 settings per query language + multilingual, rank distance"},
        "sklearn_loop": {"queries_timed": int(len(queries)), "seconds_on_subset": ref_time,
                         "seconds_all_queries": ref_full_time, "extrapolated": not full_ref,
                         "computes": "average_precision_score per (query, pool): 11 language pools + all"},
        "speedup": ref_full_time / min(eval_times),
        "check": {"max_abs_ap_difference": diffs, "tolerance": TOLERANCE,
                  "passed": bool(max(diffs.values()) <= TOLERANCE)},
        "summary": {s: result.summary()[s] for s in ("mono", "cross", "multi", "rank_distance")},
    }
    if full_ref:
        report["check"]["max_abs_summary_difference"] = summary_difference(result, ref)
        report["check"]["passed"] &= report["check"]["max_abs_summary_difference"] <= TOLERANCE
    if with_stats:
        other = evaluate(**{**_eval_args(data), "q_emb": data["q_emb"] + 0.02 * np.random.default_rng(seed + 1)
                            .standard_normal(data["q_emb"].shape).astype(np.float32)})
        report["stats"] = time_stats(result, other, n_resamples=n_resamples)
    return report


def to_markdown(report: dict) -> str:
    ev, ref, chk = report["evaluate"], report["sklearn_loop"], report["check"]
    d, env = report["data"], report["environment"]
    how = (f"timed on {ref['queries_timed']} queries ({ref['seconds_on_subset']:.1f} s) and extrapolated "
           f"linearly to all {d['n_queries']}" if ref["extrapolated"] else "run on all queries")
    lines = [
        "# Metric computation benchmark",
        "",
        f"Synthetic data of XQuAD-R shape: {d['n_queries']:,} queries, {d['n_candidates']:,} candidates, "
        f"{d['n_languages']} languages, {d['dim']}-d embeddings, {d['relevant_per_query']} relevant per query "
        f"(one per language). Commit `{report['git_commit']}`{' (with local changes)' if report['git_dirty'] else ''}; "
        f"{env['cpu_count']} CPUs ({env['platform']}, load average {env.get('load_average_1m', float('nan')):.1f} "
        f"at start), numpy {env['numpy']}, scikit-learn {env['scikit-learn']}. Both timings share the machine's "
        "load, so the speed-up is the robust number.",
        "",
        "| method | wall time (s) | notes |",
        "| --- | ---: | --- |",
        f"| `hybridnb.evaluation.metrics.evaluate` | {ev['best_s']:.2f} | best of {len(ev['times_s'])} "
        f"({', '.join(f'{t:.2f}' for t in ev['times_s'])}); {ev['computes']} |",
        f"| per-query sklearn loop | {ref['seconds_all_queries']:.1f} | {ref['computes']}; {how} |",
        "",
        f"Speed-up: **{report['speedup']:.0f}x**.",
        "",
        f"Agreement (max |AP difference| over the loop's queries, tolerance {chk['tolerance']:g}): "
        + ", ".join(f"{k} {v:.1e}" for k, v in chk["max_abs_ap_difference"].items())
        + (f"; summary mAPs {chk['max_abs_summary_difference']:.1e}" if "max_abs_summary_difference" in chk else "")
        + f" -> **{'passed' if chk['passed'] else 'FAILED'}**.",
    ]
    if "stats" in report:
        st = report["stats"]
        lines += ["", f"`hybridnb.evaluation.stats` ({st['n_resamples']} resamples over question groups, all 10 metrics): "
                  f"confidence_intervals {st['confidence_intervals_s']:.1f} s, compare (bootstrap CI + "
                  f"permutation test) {st['compare_s']:.1f} s."]
    s = report["summary"]
    lines += ["", "Synthetic-data metrics (sanity only): "
              f"mono mAP {s['mono']['map']:.3f}, cross mAP {s['cross']['map']:.3f}, multi mAP {s['multi']['map']:.3f}, "
              f"rank distance {s['rank_distance']:.0f}.", ""]
    return "\n".join(lines)


def write_report(report: dict, out: Path) -> tuple[Path, Path]:
    out = Path(out)
    json_path, md_path = out.with_suffix(".json"), out.with_suffix(".md")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    for path, text in ((json_path, json.dumps(report, indent=2, allow_nan=False) + "\n"),
                       (md_path, to_markdown(report))):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)  # never a half-written report
    return json_path, md_path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=reports_root() / "benchmarks" / "metrics.json",
                        help="JSON path; the Markdown goes beside it with suffix .md")
    parser.add_argument("--ref-queries", type=int, default=50,
                        help="queries per language for the sklearn loop (0 = all queries, ~20 min)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-resamples", type=int, default=1000)
    parser.add_argument("--no-stats", action="store_true", help="skip timing hybridnb.evaluation.stats")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    report = run(ref_per_lang=args.ref_queries, repeats=args.repeats, n_resamples=args.n_resamples,
                 seed=args.seed, with_stats=not args.no_stats)
    json_path, md_path = write_report(report, args.out)
    print(to_markdown(report))
    print(f"wrote {json_path} and {md_path}")
    return 0 if report["check"]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
