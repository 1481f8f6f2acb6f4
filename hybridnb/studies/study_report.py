"""STUDY.md and its figures: the seed-aware comparison of X-X-mono, X-Y and hybrid (notebook 08).

Takes what :func:`hybridnb.studies.study.collect` returns (the study's finished runs, per system and seed, and the
zero-shot rows) and builds, per evaluation dataset:

* the seed table: per system and column, the mean over seeds with its interval over seeds and questions
  (:func:`hybridnb.evaluation.seed_stats.seed_summary`) and the per-seed values;
* the verdicts: hybrid minus every baseline (X-X-mono, X-Y, zero-shot) in every column, win / loss / no
  difference beyond seed and question noise (:func:`hybridnb.evaluation.seed_stats.seed_compare`), and one sentence;
* the paper beside us: its rows for XLM-R and LaBSE (:mod:`hybridnb.studies.paper_numbers`) and, per column and
  baseline, whether our direction of effect agrees with the paper's;
* figures: per-seed points with means and intervals, the differences with their intervals, validation curves.

Relations: :mod:`hybridnb.studies.study` plans and trains the runs; :mod:`hybridnb.evaluation.seed_stats` does the statistics;
:mod:`hybridnb.studies.compare` is the one-seed comparison of ``make reproduce`` (REPORT.md), whose column names and
labels this module shares.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hybridnb.studies import compare, paper_numbers
from hybridnb import reporting
from hybridnb.evaluation import seed_stats
from hybridnb.evaluation.metrics import EvalResult

__all__ = ["SYSTEMS", "BASELINES", "per_query", "seed_table", "verdict_table", "summary_sentence",
           "paper_agreement", "probe_table", "budget_rows", "plot_points", "plot_differences",
           "plot_validation_curves", "report_markdown"]

SYSTEMS = ("zero-shot", "X-X-mono", "X-Y", "hybrid")
BASELINES = ("X-X-mono", "X-Y", "zero-shot")
TARGET = "hybrid"
PAPER_MODELS = ("XLM-R", "LaBSE")


def _column(key: str) -> str:
    return compare.column_name(*seed_stats.KEYS[key])


def per_query(systems: dict[str, list[dict]], dataset: str) -> dict[str, list[EvalResult]]:
    """{system: [EvalResult per seed]} for the systems evaluated on ``dataset``."""
    return {name: [EvalResult.load(Path(r["dir"]) / f"per_query_{dataset}.npz") for r in runs]
            for name, runs in systems.items() if runs and all(dataset in r["results"]["datasets"] for r in runs)}


def _digits(key: str) -> int:
    return 1 if key == "rank_distance" else 3


def seed_table(summaries: dict[str, dict]) -> pd.DataFrame:
    """Rows: systems; columns: 'mean [low, high]' per column, the number of seeds."""
    rows = {}
    for name, summary in summaries.items():
        first = next(iter(summary.values()))
        row = {"seeds": len(first["per_seed"])}
        for key, e in summary.items():
            d = _digits(key)
            row[_column(key)] = (f"{e['mean']:.{d}f} [{e['low']:.{d}f}, {e['high']:.{d}f}]"
                                 + ("" if e["seed_noise_measured"] else " (1 seed)"))
        rows[name] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def per_seed_table(summaries: dict[str, dict], keys=("mono_ap", "cross_ap", "multi_ap", "rank_distance")) -> pd.DataFrame:
    """Rows: systems; columns: the per-seed values of the headline columns, and their standard deviation."""
    rows = {}
    for name, summary in summaries.items():
        row = {}
        for key in keys:
            vals = summary[key]["per_seed"]
            d = _digits(key)
            sd = f", sd {np.std(vals, ddof=1):.{d}f}" if len(vals) > 1 else ""
            row[_column(key)] = " / ".join(f"{v:.{d}f}" for v in vals) + sd
        rows[name] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def verdict_table(comparisons: dict[str, dict]) -> pd.DataFrame:
    """Long frame: baseline, column, key, hybrid, baseline value, diff, low, high, p, verdict."""
    rows = []
    for baseline, cmp in comparisons.items():
        for key, e in cmp.items():
            rows.append({"baseline": baseline, "column": _column(key), "key": key, "hybrid": e["a"],
                         "baseline value": e["b"], "diff": e["diff"], "low": e["low"], "high": e["high"],
                         "p_value": e["p_value"], "df": e["df"], "verdict": seed_stats.verdict(e, key)})
    return pd.DataFrame(rows)


def summary_sentence(verdicts: pd.DataFrame, dataset: str) -> str:
    """Plain sentences: where hybrid wins, loses and ties against each baseline on ``dataset``."""
    parts = []
    for baseline, group in verdicts.groupby("baseline", sort=False):
        by = {v: [c for c in group[group.verdict.str.rstrip("?") == v].column] for v in ("win", "loss")}
        ties = len(group) - len(by["win"]) - len(by["loss"])
        if not by["win"] and not by["loss"]:
            text = f"Against {baseline}, no difference beyond noise in any of the {ties} columns"
        else:
            bits = [f"{word} on {', '.join(by[v])}" for v, word in (("win", "better"), ("loss", "worse")) if by[v]]
            if ties:
                bits.append(f"no different beyond noise on the other {ties}")
            text = f"Against {baseline}, hybrid is " + "; ".join(bits)
        if group.verdict.str.endswith("?").any():
            text += " (one seed: training noise not measured, so these are not yet claims)"
        parts.append(text)
    return f"On {dataset}: " + ". ".join(parts) + "."


def _paper_diff(frame: pd.DataFrame, model: str, dataset: str, baseline: str, key: str) -> float | None:
    rows = frame[(frame.model == model) & (frame.dataset == dataset)].set_index("strategy")
    value = paper_numbers.value_name(*seed_stats.KEYS[key])
    if value not in rows.columns or "hybrid" not in rows.index or baseline not in rows.index:
        return None
    h, b = rows.at["hybrid", value], rows.at[baseline, value]
    if h is None or b is None or pd.isna(h) or pd.isna(b):
        return None
    return float(h) - float(b)


def _direction(diff: float | None) -> int | None:
    return None if diff is None else int(np.sign(diff))


def paper_agreement(verdicts: pd.DataFrame, paper: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Per column the paper prints and per baseline it has (X-X-mono, X-Y): our hybrid minus baseline with
    its verdict, the paper's difference for XLM-R and LaBSE, and whether the directions agree. "agrees" needs
    our difference to be beyond noise in the paper's direction; "same sign, within noise" otherwise."""
    rows = []
    codes = {"X-X-mono": "mono", "X-Y": "cross"}
    for _, r in verdicts[verdicts.baseline.isin(codes)].iterrows():
        diffs = {m: _paper_diff(paper, m, dataset, codes[r.baseline], r.key) for m in PAPER_MODELS}
        if all(d is None for d in diffs.values()):
            continue
        ours = _direction(r["diff"])
        row = {"column": r.column, "hybrid minus": r.baseline,
               "ours": f"{r['diff']:+.{_digits(r.key) + 1}f} ({r.verdict})"}
        for model, d in diffs.items():
            if d is None:
                row[f"paper {model}"], row[f"vs {model}"] = paper_numbers.MISSING, paper_numbers.MISSING
                continue
            row[f"paper {model}"] = f"{d:+.4g}"
            paper_dir = _direction(d)
            row[f"vs {model}"] = ("paper: tie" if paper_dir == 0 else
                                  "agrees" if r.verdict.rstrip("?") != "no difference" and ours == paper_dir else
                                  "opposite" if r.verdict.rstrip("?") != "no difference" else
                                  "same sign, within noise" if ours == paper_dir else "other sign, within noise")
        rows.append(row)
    return pd.DataFrame(rows)


def probe_table(probes: list[dict], val_mrr: dict[float, float], chosen: float, dataset: str) -> pd.DataFrame:
    """The temperature probes: validation MRR (the choice) and, for context only, the evaluation numbers."""
    rows = []
    for p in probes:
        t = p["run"].params["temperature"]
        tr = p["results"]["training"]
        block = p["results"]["datasets"].get(dataset, {})
        row = {"temperature": t, "chosen": "yes" if t == chosen else "", "validation MRR (best step)": f"{val_mrr[t]:.4f}",
               "best step": tr["best_step"], "best validation loss": f"{tr['best_val_loss']:.3f}"}
        for key in ("mono_ap", "cross_ap", "multi_ap", "rank_distance"):
            setting, metric = seed_stats.KEYS[key]
            entry = block.get(setting) if metric is None else block.get(setting, {}).get(metric)
            row[f"{dataset} {_column(key)}"] = reporting.format_ci(entry, _digits(key)) if entry else "—"
        rows.append(row)
    return pd.DataFrame(rows)


def budget_rows(runs: list[dict]) -> pd.DataFrame:
    """Per run: where, wall time and training time as recorded by the run that trained it."""
    rows = []
    for r in runs:
        t = r["results"].get("timings", {})
        rss = t.get("peak_rss_mb")
        rows.append({"run": r["run"].cfg.run_name, "group": r["run"].group,
                     "wall (min)": round(t.get("wall_s", math.nan) / 60, 1),
                     "training (min)": round(t.get("train_s", math.nan) / 60, 1),
                     "peak RSS (GB)": f"{rss / 1000:.2f}" if rss else "not recorded",
                     "machine": r["results"].get("provenance", {}).get("hardware", {}).get("cpu", "?")})
    return pd.DataFrame(rows)


def budget_verdict(budget: pd.DataFrame, target_minutes: float | None) -> str:
    """The total run time against the study's target, and what one run costs (its training and the rest,
    which is evaluation), so a reader sees where the minutes go."""
    if budget.empty:
        return "No run has finished yet."
    total = budget["wall (min)"].sum()
    line = f"Total: **{total:.0f} min** of run time over {len(budget)} runs"
    if target_minutes:
        line += f" (target {target_minutes:g} min: **{'met' if total <= target_minutes else 'not met'}**)"
    train, wall = budget["training (min)"].median(), budget["wall (min)"].median()
    return (line + f". The median run took {wall:.1f} min, {train:.1f} of them training steps and the rest "
            "mostly encoding the evaluation dataset; times come from different machines and some runs shared "
            "the CPU with other work, so they are a record, not a benchmark.")


# ---- figures -------------------------------------------------------------------------------------------

HEADLINE = ("mono_ap", "cross_ap", "multi_ap", "rank_distance")
COLOURS = {"zero-shot": "0.45", "X-X-mono": "C0", "X-Y": "C1", "hybrid": "C3"}


def plot_points(summaries: dict[str, dict], dataset: str):
    """Per headline column: every seed's value (dots), the mean (bar) and its interval over seeds and
    questions (error bar), per system; zero-shot is one deterministic point."""
    import matplotlib.pyplot as plt

    names = [s for s in SYSTEMS if s in summaries]
    fig, axes = plt.subplots(1, len(HEADLINE), figsize=(3.2 * len(HEADLINE), 3.6))
    for ax, key in zip(axes, HEADLINE):
        for i, name in enumerate(names):
            e = summaries[name][key]
            ax.errorbar(i, e["mean"], yerr=[[e["mean"] - e["low"]], [e["high"] - e["mean"]]], fmt="_", ms=22,
                        mew=2.5, capsize=6, color=COLOURS[name], zorder=2)
            vals = e["per_seed"]
            offsets = np.linspace(-0.15, 0.15, len(vals)) if len(vals) > 1 else [0.0]
            ax.scatter(i + np.asarray(offsets), vals, s=18, color=COLOURS[name], edgecolor="k", lw=0.4, zorder=3)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        ax.set_xlim(-0.6, len(names) - 0.4)  # room for the mean bars at both ends
        ax.set_title(_column(key) + (" (lower is better)" if key in seed_stats.LOWER_IS_BETTER else ""), fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{dataset}: per-seed values (dots), mean and 95% interval over seeds and questions", fontsize=10)
    fig.tight_layout()
    return fig


def plot_differences(verdicts: pd.DataFrame, dataset: str):
    """Hybrid minus each baseline per column with its interval; filled = beyond noise. mAP/recall columns
    and rank distance on separate axes (different units)."""
    import matplotlib.pyplot as plt

    baselines = [b for b in BASELINES if b in set(verdicts.baseline)]
    fig, (ax, ax_rd) = plt.subplots(1, 2, figsize=(10, 4.6), gridspec_kw={"width_ratios": [3, 1]}, layout="constrained")
    for axis, frame in ((ax, verdicts[verdicts.key != "rank_distance"]), (ax_rd, verdicts[verdicts.key == "rank_distance"])):
        columns = list(dict.fromkeys(frame.column))
        for j, baseline in enumerate(baselines):
            sub = frame[frame.baseline == baseline].set_index("column").reindex(columns)
            y = np.arange(len(columns)) + (j - (len(baselines) - 1) / 2) * 0.22
            for yi, (_, r) in zip(y, sub.iterrows()):
                if pd.isna(r["diff"]):
                    continue
                filled = r.verdict.rstrip("?") != "no difference"
                axis.errorbar(r["diff"], yi, xerr=[[r["diff"] - r.low], [r.high - r["diff"]]], fmt="o",
                              color=COLOURS[baseline], mfc=COLOURS[baseline] if filled else "white", capsize=3,
                              label=f"hybrid − {baseline}" if yi == y[0] else None)
        axis.axvline(0, color="k", lw=0.8)
        axis.set_yticks(range(len(columns)), columns)
        axis.set_ylim(len(columns) - 0.5, -0.5)  # first column on top; one row per column, whatever the panel
        axis.grid(axis="x", alpha=0.3)
    ax.set_xlabel("difference (mAP / recall)")
    ax_rd.set_xlabel("difference (ranks; < 0 favours hybrid)")
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.01), ncol=3, fontsize=8, frameon=False)
    fig.suptitle(f"{dataset}: hybrid minus each baseline, 95% interval over seeds and questions "
                 "(filled: beyond noise)", fontsize=10)
    return fig


def plot_validation_curves(logs: dict[str, dict[int, list[dict]]]):
    """Validation loss and MRR per step, one line per seed, one colour per system (left: loss, right: MRR)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (ax_loss, ax_mrr) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, by_seed in logs.items():
        for i, (seed, log) in enumerate(sorted(by_seed.items())):
            val = [r for r in log if "val_loss" in r]
            steps = [r["step"] + 1 for r in val]
            label = name if i == 0 else None
            ax_loss.plot(steps, [r["val_loss"] for r in val], "o-", ms=3, color=COLOURS.get(name, "k"), alpha=0.8,
                         label=label)
            if val and "val_mrr" in val[0]:
                ax_mrr.plot(steps, [r["val_mrr"] for r in val], "o-", ms=3, color=COLOURS.get(name, "k"), alpha=0.8,
                            label=label)
    ax_loss.set(xlabel="step", ylabel="validation InfoNCE loss",
                title="validation loss (each strategy's own batch kinds)")
    ax_mrr.set(xlabel="step", ylabel="validation MRR", title="validation MRR (temperature-free)")
    for a in (ax_loss, ax_mrr):
        a.grid(alpha=0.3)
        a.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
    ax_loss.legend(fontsize=8, title="one line per seed", title_fontsize=8)
    fig.tight_layout()
    return fig


# ---- STUDY.md ------------------------------------------------------------------------------------------


def _table(frame: pd.DataFrame, index: str | None = "system") -> str:
    if frame.empty:
        return "(none)\n"
    rows = frame.reset_index().rename(columns={"index": index}) if index else frame
    return reporting.markdown_table(rows.to_dict(orient="records"))


def report_markdown(prov: dict, params: dict, collected: dict, sections: dict[str, dict], figures: list[str],
                    paper_source: str | None, bench: dict | None = None) -> str:
    """STUDY.md from the collected runs and the per-dataset sections built by notebook 08."""
    grid = collected["grid"]
    n_runs = {name: len(v) for name, v in collected["systems"].items() if name != "zero-shot"}
    expected = len(params.get("seeds") or [params["seed"]])
    complete = all(n == expected for n in n_runs.values()) and len(n_runs) == len(params["strategies"])
    lines = [f"# The study: X-X-mono vs X-Y vs hybrid over {expected} training seeds (profile `{params['profile']}`)",
             "", reporting.stamp(prov), ""]
    if not complete:
        lines += [f"**Interim**: {sum(n_runs.values())} of {expected * len(params['strategies'])} grid runs have "
                  f"finished ({', '.join(f'{k}: {v} seed(s)' for k, v in n_runs.items())}). The numbers below use "
                  "the finished runs only; `make study` trains the rest (finished runs are reused).", ""]
    t = collected["temperature"]
    first = grid[0]["results"]["training"] if grid else {}
    lines += ["## Setup", "",
              f"- Model `{params['model']}`, trained on {params['train_data']} ({first.get('train_items', '?')} ids "
              f"after the validation split and the overlap check), evaluated zero-shot on {params['eval_data']}; "
              f"{params['steps']} steps of {params['batch_size']} pairs ({params['steps'] * params['batch_size']} "
              f"pairs, {params['steps'] * params['batch_size'] / max(first.get('train_items', 1), 1):.1f} epochs "
              f"over the training ids), lr {params['lr']:g}, temperature {t:g}, "
              f"{params['n_hard_negatives']} hard negative, max length {params['max_length']}, candidates as "
              f"{params['candidate_mode']}. The evaluated checkpoint is the one with the lowest validation loss.",
              f"- Seeds {params.get('seeds')}: a seed changes the batch kinds, languages and items drawn and the "
              "dropout masks; the training data, hard negatives, validation split and validation batches are the "
              "same for every seed, so seeds differ by training randomness only.",
              "- Intervals: 95%, over training seeds *and* questions: mean ± t(df)·sqrt(seed variance / S + "
              "question-bootstrap variance), Welch–Satterthwaite df (`hybridnb.evaluation.seed_stats`). A difference "
              "counts as a win or a loss only when its interval excludes 0; p is the Welch t-test of the same "
              "difference. Zero-shot has no training, so no seed variance. A \"?\" marks a verdict whose seed "
              "noise could not be measured (one seed).",
              "- Our setup differs from the paper's: E5-small (already retrieval-tuned) instead of XLM-R / LaBSE, "
              "MLQA-R's 7 languages instead of mMARCO plus 8 QA sets in 9 languages, batch 32 instead of 100, "
              "64 tokens instead of full length, a 2-core CPU budget of "
              f"{params['steps']} steps. Compare directions of effect with the paper, not values.", ""]
    if collected["probes"]:
        lines += ["## The temperature", "",
                  "E5's own model card: \"we use a low temperature 0.01 for InfoNCE contrastive loss\" "
                  "(intfloat/multilingual-e5-small, README, FAQ 3); the cpu profile trains at 0.05 "
                  "(sentence-transformers' MNRL scale 20). Both were probed with hybrid at the first seed; the "
                  "grid trains at the one with the higher validation MRR on the held-out MLQA-R items (the "
                  "loss is not comparable across temperatures, MRR is). The evaluation columns are context, "
                  "not the criterion: choosing on them would tune on the test set.", "",
                  _table(sections["_probes"], index=None), ""]
    lines += candidate_mode_lines(params, sections.get(params["eval_data"]), bench)
    for dataset, sec in sections.items():
        if dataset.startswith("_"):
            continue
        lines += [f"## {dataset}", "", sec["sentence"], "",
                  f"### Every system, mean over seeds [95% interval over seeds and questions]", "",
                  _table(sec["seed_table"]), "", "Per-seed values (and their standard deviation):", "",
                  _table(sec["per_seed"]), ""]
        if sec.get("zero_shot_other_summary"):
            lines += ["Zero-shot in the other candidate mode (context for the choice of `candidate_mode`; see "
                      "\"The evaluation input\"):", "", _table(seed_table(sec["zero_shot_other_summary"])), ""]
        v = sec["verdicts"].copy()
        v["diff [95%]"] = [f"{r['diff']:+.{_digits(r.key) + 1}f} [{r.low:+.{_digits(r.key) + 1}f}, "
                           f"{r.high:+.{_digits(r.key) + 1}f}]" for _, r in v.iterrows()]
        v["p"] = [seed_stats.format_p(p) for p in v.p_value]
        lines += ["### Hybrid against every baseline", "",
                  _table(v[["baseline", "column", "diff [95%]", "p", "verdict"]], index=None), ""]
        if not sec["paper"].empty:
            lines += ["### Beside the paper", "",
                      f"The paper's hybrid minus baseline on {dataset} ({paper_source}; XLM-R and LaBSE trained on "
                      "mMARCO + 8 QA sets, Table 1 mAP, Tables 3-6 recall means, Tables 7-8 rank distance), "
                      "next to ours. \"agrees\": our difference is beyond noise and has the paper's sign.", "",
                      _table(sec["paper"], index=None), ""]
            if sec.get("paper_rows") is not None:
                lines += ["The paper's rows (transcribed, not measured here):", "", _table(sec["paper_rows"], index=None), ""]
    lines += ["## Budget", "",
              "Each run's wall time as recorded by the process that trained and evaluated it (reused runs keep "
              f"their original time). Target: {params.get('study_budget_minutes') or 'none set'} min for the whole study on 2 cores.",
              "", _table(sections["_budget"], index=None), budget_verdict(sections["_budget"],
                                                                params.get("study_budget_minutes")), ""]
    lines += ["## Figures", ""] + [f"![{Path(f).stem}]({f})" for f in figures]
    return "\n".join(lines) + "\n"


def build(params: dict, collected: dict, zero_shot_row: dict | None,
          zero_shot_other: dict | None = None) -> dict[str, Any]:
    """Compute every section and figure, write ``reports/<profile>/STUDY.md`` and its figures, and return
    {"sections", "figures", "path", "text"} for the notebook to display (the figures are closed after
    saving; ``display(fig)`` still draws them)."""
    import matplotlib.pyplot as plt

    from hybridnb.training import checkpoints
    from hybridnb.paths import reports_root

    n, s = params["n_resamples"], params["seed"]
    systems = {name: runs for name, runs in collected["systems"].items()}
    if zero_shot_row is not None:
        systems = {"zero-shot": [zero_shot_row], **systems}
    paper, source = paper_numbers.load()
    out_dir = reports_root() / params["profile"]
    figures: dict[str, Any] = {}
    sections: dict[str, Any] = {"_budget": budget_rows(collected["probes"] + [
        r for r in collected["grid"] + collected["reverse"] if r["dir"] not in {p["dir"] for p in collected["probes"]}])}
    if collected["probes"]:
        sections["_probes"] = probe_table(collected["probes"], collected["val_mrr"], collected["temperature"],
                                          params["eval_data"])
    def section(systems: dict, dataset: str, preface: str = "") -> dict | None:
        results = per_query(systems, dataset)
        if TARGET not in results:
            return None
        summaries = {name: seed_stats.seed_summary(r, n, seed=s, deterministic=(name == "zero-shot"))
                     for name, r in results.items()}
        comparisons = {b: seed_stats.seed_compare(results[TARGET], results[b], n, seed=s,
                                                  b_deterministic=(b == "zero-shot"))
                       for b in BASELINES if b in results}
        verdicts = verdict_table(comparisons)
        figures[f"figures/study_points_{dataset}.png"] = plot_points(summaries, dataset)
        figures[f"figures/study_differences_{dataset}.png"] = plot_differences(verdicts, dataset)
        return {"summaries": summaries, "seed_table": seed_table(summaries), "per_seed": per_seed_table(summaries),
                "verdicts": verdicts, "sentence": preface + summary_sentence(verdicts, dataset),
                "paper": paper_agreement(verdicts, paper, dataset), "paper_rows": _paper_rows(paper, dataset)}

    dataset = params["eval_data"]
    sec = section(systems, dataset)
    if sec is not None:
        sec["zero_shot_other_summary"] = other_mode_summary(zero_shot_other, dataset, n, s)
        sections[dataset] = sec
    if collected.get("reverse"):  # the paper's other table: trained on eval_data, evaluated on train_data
        reverse: dict[str, list[dict]] = {}
        for r in collected["reverse"]:
            reverse.setdefault(r["run"].system, []).append(r)
        if zero_shot_row is not None:
            reverse = {"zero-shot": [zero_shot_row], **reverse}
        seeds = sorted({r["run"].seed for r in collected["reverse"]})
        back = params["train_data"]
        rsec = section(reverse, back, f"Reverse direction: trained on {dataset}, evaluated zero-shot on {back}, "
                                      f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))} per "
                                      "strategy" + (": seed noise is not measured here, so a verdict with a "
                                                    "? is beyond question noise only. " if len(seeds) < 2 else ". "))
        if rsec is not None:
            rsec["zero_shot_other_summary"] = other_mode_summary(zero_shot_other, back, n, s)
            sections[back] = rsec
    logs: dict[str, dict[int, list[dict]]] = {}
    for name, runs in collected["systems"].items():
        for r in runs:
            logs.setdefault(name, {})[r["run"].seed] = checkpoints.read_log(Path(r["dir"]) / "train_log.jsonl",
                                                                           math.inf)
    if logs:
        figures["figures/study_validation_curves.png"] = plot_validation_curves(logs)
    prov = reporting.provenance(params["profile"])
    bench_file = reports_root() / "benchmarks" / "candidate_mode.json"
    bench = json.loads(bench_file.read_text(encoding="utf-8")) if bench_file.exists() else None
    text = report_markdown(prov, params, collected, sections, list(figures), source, bench)
    for rel, fig in figures.items():
        reporting.save_figure(fig, out_dir / rel)
        plt.close(fig)
    path = reporting.write_text(out_dir / "STUDY.md", text)
    return {"sections": sections, "figures": figures, "path": path, "text": text}


def other_mode_summary(zero_shot_other: dict | None, dataset: str, n_resamples: int, seed: int) -> dict | None:
    """Zero-shot in the candidate mode the study did not choose, on ``dataset`` only: {label: seed summary}
    with the label "zero-shot, <mode>" (None when that run is missing or did not evaluate ``dataset``).
    ``seed_table`` of it has the columns of the "Every system" table."""
    if zero_shot_other is None:
        return None
    label = f"zero-shot, {zero_shot_other['results']['model']['candidate_mode']}"
    results = per_query({label: [zero_shot_other]}, dataset)
    if not results:
        return None
    return {label: seed_stats.seed_summary(results[label], n_resamples, seed=seed, deterministic=True)}


def candidate_mode_lines(params: dict, sec: dict | None, bench: dict | None) -> list[str]:
    """## The evaluation input: the study's candidate mode, the other mode's zero-shot numbers beside it, and
    the encoding cost of both from benchmarks/bench_candidate_mode.py (``bench``: its JSON, when run)."""
    mode, dataset = params["candidate_mode"], params["eval_data"]
    lines = ["## The evaluation input", "",
             f"The study encodes candidates as **{mode}**"
             + (", LAReQA's definition of a candidate (the answer sentence with its paragraph as context), so our "
                "rows measure the benchmark as it is defined. " if mode == "sentence+context" else ". ")
             + f"At max length {params['max_length']} the paragraph is cut first, so what it adds is the paragraph's "
             "opening tokens, the same for every sentence of that paragraph: it makes the sentences of one paragraph "
             "(the hardest negatives, one of which is the answer) look more alike. The mode was fixed before the "
             "study's runs and is not changed after seeing them: choosing the evaluation input on test numbers would "
             "tune on the test set."]
    other = sec and sec.get("zero_shot_other_summary")
    if other and "zero-shot" in sec["summaries"]:
        (label, o), z = next(iter(other.items())), sec["summaries"]["zero-shot"]
        diffs = ", ".join(f"{_column(k)} {z[k]['mean']:.{_digits(k)}f} vs {o[k]['mean']:.{_digits(k)}f}"
                          for k in HEADLINE)
        higher = all((o[k]["mean"] > z[k]["mean"]) == (k != "rank_distance") for k in HEADLINE)
        lines += ["", f"Zero-shot on {dataset}, {mode} vs {label.split(', ', 1)[1]}: {diffs}"
                  + (" — the other mode scores higher in every headline column, so absolute levels depend on the "
                     "mode; the comparison between strategies is within one mode." if higher else ".")]
    if bench:
        rows = {r["mode"]: r for r in bench["rows"]}
        st = bench["settings"]
        lines += ["", "Encoding cost on full XQuAD-R (benchmarks/bench_candidate_mode.py, "
                  f"reports/benchmarks/candidate_mode.md, {st['encode_dtype']}, {st['threads']} threads): "
                  + "; ".join(f"{m}: {r['passages_per_s']:.1f} passages/s, {r['mean_tokens']:.1f} tokens on average, "
                              f"{100 * r['share_at_cap']:.0f}% at the cap" for m, r in rows.items()) + "."]
    else:
        lines += ["", "The encoding cost of each mode is not measured yet (`python benchmarks/bench_candidate_mode.py`)."]
    return lines + [""]


def _paper_rows(paper: pd.DataFrame, dataset: str) -> pd.DataFrame | None:
    rows = paper[paper.dataset == dataset]
    if rows.empty:
        return None
    cols = ["model", "strategy"] + [c for c in paper_numbers.VALUES if rows[c].notna().any()]
    out = rows[cols].copy()
    out["strategy"] = out.strategy.map(paper_numbers.LABELS)
    return out.fillna(paper_numbers.MISSING)
