"""REPORT.md, the one report of ``make reproduce``: the recipe's runs, with seeds, in both directions.

Reads only finished runs (nothing trains here) and builds, in this order:

1. **Summary**: plain sentences generated from the verdict tables below (:func:`summary_lines`) and checked
   against them before anything is written (:func:`check_summary`): a sentence that says "better" where the
   table says "no difference" stops the report;
2. **The recipe**: the probes of :mod:`hybridnb.studies.recipe` on the held-out validation pool (input and
   length, temperature, budget), the choice and the rule that made it, the test-set columns as context;
3. **Per direction** (train MLQA-R -> evaluate XQuAD-R, and the reverse): the paper's Table-1 shape (systems
   as rows, mean over seeds with the seed-aware interval), the paper's XLM-R and LaBSE rows beside ours
   (labelled as the paper's), hybrid against every baseline in every column, and the agreement with the
   paper's direction of effect;
4. **Seen vs unseen languages** (XQuAD-R after training on MLQA-R: el, ru, th, tr never trained on): mono and
   cross mAP split by whether the languages were trained on, for every system, and hybrid's gain per split;
5. **The mix ratio**, text and image-text, 3 seeds per point, against alpha = 0.5, with a figure per side;
6. the run times, the figures and links to every other file under ``reports/``.

The statistics are :mod:`hybridnb.evaluation.seed_stats`' (mean over seeds, interval over seeds and
questions); the verdict rule is stated once in the report. Relations: :mod:`hybridnb.studies.recipe` plans and
trains the runs; :mod:`hybridnb.studies.seed_tables` holds the table and figure helpers shared with it.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hybridnb import config, reporting
from hybridnb.evaluation import seed_stats
from hybridnb.evaluation.metrics import EvalResult
from hybridnb.studies import compare, miracl_eval, paper_numbers, recipe, runs, seed_tables, sweep
from hybridnb.studies.seed_tables import frame_markdown, is_zero_shot, system_table

__all__ = ["headline", "update_readme", "system_table", "verdict_wide", "SPLIT_KEYS", "split_seen_unseen", "by_label", "direction_section", "seen_unseen_section",
           "summary_lines", "verdict_words", "setting_effect", "paired", "verdict_changes", "robustness",
           "firm_paragraph", "firm_lines", "caveat", "check_summary", "probe_frame", "sweep_section", "build"]

SYSTEMS, BASELINES, TARGET = seed_tables.SYSTEMS, seed_tables.BASELINES, seed_tables.TARGET
HEADLINE = seed_tables.HEADLINE
#: the title suffix of the reverse direction trained with in-batch false negatives masked (recipe.masked_runs)
MASKED = "false negatives masked"
#: the seen / unseen columns (seed_stats.KEYS names them)
SPLIT_KEYS = ("mono_ap_seen", "mono_ap_unseen", "cross_ap_seen", "cross_ap_unseen")


# ---- the systems of a direction -----------------------------------------------------------------------


def by_label(entries: list[dict[str, Any]], order=None) -> dict[str, list[dict[str, Any]]]:
    """{label: [finished run entries, seed order]} from recipe entries (a label: a system, or a sweep point);
    with ``order``, only its labels, in its order."""
    out: dict[str, list[dict]] = {}
    for e in sorted(entries, key=lambda e: e["run"].seed):
        out.setdefault(e["run"].label, []).append(e)
    return out if order is None else {s: out[s] for s in order if s in out}


def split_seen_unseen(result: EvalResult, seen: list[str]) -> EvalResult:
    """``result`` with the :data:`SPLIT_KEYS` columns added: mono AP of queries in a seen (trained) language or
    not, and cross AP of (query language, pool language) pairs with both seen or at least one unseen."""
    langs = np.asarray(result.languages)
    seen_lang = np.isin(langs, list(seen))
    q_seen = seen_lang[result.q_lang]
    mono, cross = (np.asarray(result.per_query[k], dtype=np.float64) for k in ("mono_ap", "cross_ap"))
    both = q_seen[:, None] & seen_lang[None, :]
    extra = {"mono_ap_seen": np.where(q_seen, mono, np.nan), "mono_ap_unseen": np.where(q_seen, np.nan, mono),
             "cross_ap_seen": np.where(both, cross, np.nan), "cross_ap_unseen": np.where(both, np.nan, cross)}
    return EvalResult(list(result.languages), {**result.per_query, **extra}, result.q_lang, result.q_group,
                      result.ks, dict(result.meta))


def _summaries(results: dict[str, list[EvalResult]], n: int, seed: int, keys: list[str]) -> dict[str, dict]:
    """The seed summary of every system (or sweep point) of ``results`` in ``keys``; a zero-shot row is one
    deterministic result (no seed noise)."""
    return {name: seed_stats.seed_summary(rs, n, seed=seed, deterministic=is_zero_shot(name), keys=keys)
            for name, rs in results.items()}


def _verdicts(pairs: dict[str, tuple[list[EvalResult], list[EvalResult]]], n: int, seed: int, keys: list[str],
              name: str = "baseline") -> pd.DataFrame:
    """:func:`seed_tables.verdict_table` of ``a`` minus ``b`` for every ``{label: (a, b)}`` of ``pairs`` (the label
    in the ``name`` column); a zero-shot ``b`` is deterministic."""
    return seed_tables.verdict_table({label: seed_stats.seed_compare(a, b, n, seed=seed, keys=keys,
                                                                     b_deterministic=is_zero_shot(label))
                                      for label, (a, b) in pairs.items()}, name)


def direction_section(systems: dict[str, list[dict]], dataset: str, n: int, seed: int,
                      zero_shots: dict[str, dict]) -> dict[str, Any] | None:
    """Seed summaries of every system on ``dataset`` (the zero-shot rows first: ``{label: {"dir"}}``, "zero-shot"
    for the recipe's input, "zero-shot (<input>)" for another), hybrid minus every baseline (every zero-shot row
    included) in every column, and the paper beside them. None while hybrid has no finished run."""
    entries = {label: [z] for label, z in zero_shots.items()} | systems  # the zero-shot rows first
    results = {name: [compare.load_per_query(e["dir"], dataset) for e in es] for name, es in entries.items()}
    if TARGET not in results:
        return None
    baselines = [b for b in BASELINES if b in results and b != "zero-shot"] + \
        [name for name in results if is_zero_shot(name)]
    keys = list(seed_stats.REPORTED)
    summaries = _summaries(results, n, seed, keys)
    verdicts = _verdicts({b: (results[TARGET], results[b]) for b in baselines}, n, seed, keys)
    paper, _ = paper_numbers.load()
    return {"dataset": dataset, "results": results, "summaries": summaries, "verdicts": verdicts,
            "comparisons": baselines,
            "seeds": {name: len(r) for name, r in results.items()},
            "paper": seed_tables.paper_agreement(verdicts, paper, dataset),
            "paper_rows": seed_tables.paper_rows(paper, dataset)}


def seen_unseen_section(section: dict, seen: list[str], n: int, seed: int) -> dict[str, Any] | None:
    """Mono and cross mAP split into seen and unseen languages for every system, and hybrid minus every
    baseline per split. None when every evaluated language was trained on."""
    languages = section["results"][TARGET][0].languages
    unseen = [g for g in languages if g not in seen]
    if not unseen:
        return None
    split = {name: [split_seen_unseen(r, seen) for r in rs] for name, rs in section["results"].items()}
    return {"seen": [g for g in languages if g in seen], "unseen": unseen,
            "summaries": _summaries(split, n, seed, list(SPLIT_KEYS)),
            "verdicts": _verdicts({b: (split[TARGET], split[b]) for b in section["comparisons"]}, n, seed,
                                  list(SPLIT_KEYS))}


# ---- the summary, generated from the verdicts and checked against them -------------------------------

_WORDS = {"win": "better", "loss": "worse"}
#: what a sentence drawn from one training seed adds (its noise over seeds is not measured)
ONE_SEED = " (one seed: training noise not measured, not yet a claim)"


def summary_lines(where: str, verdicts: pd.DataFrame) -> list[str]:
    """One sentence per baseline: the columns where hybrid is better, worse, and the number with no
    difference beyond noise, exactly as ``verdicts`` says ("?" verdicts are one-seed and say so)."""
    lines = []
    for name in ("column", "baseline"):  # the sentence lists names with ", ": a name must not hold one
        if verdicts[name].str.contains(", ").any():
            raise ValueError(f"a {name} name holds ', ': {sorted(set(verdicts[name][verdicts[name].str.contains(', ')]))}")
    for baseline, group in verdicts.groupby("baseline", sort=False):
        text = f"{where}: against {baseline}, hybrid is {verdict_words(group)}"
        if group.verdict.str.endswith("?").any():
            text += ONE_SEED
        lines.append(text + ".")
    return lines


def verdict_words(group: pd.DataFrame) -> str:
    """One comparison's verdicts in words: "better on a, b; worse on c; no different beyond noise on the other 7",
    or "no different beyond noise in any of the 10 columns"."""
    by = {v: list(group[group.verdict.str.rstrip("?") == v].column) for v in ("win", "loss")}
    ties = len(group) - len(by["win"]) - len(by["loss"])
    if not by["win"] and not by["loss"]:
        return f"no different beyond noise in any of the {ties} columns"
    bits = [f"{_WORDS[v]} on {', '.join(by[v])}" for v in ("win", "loss") if by[v]]
    if ties:
        bits.append(f"no different beyond noise on the other {ties}")
    return "; ".join(bits)


def caveat(confounded: list[str], masked_where: str | None, effect: pd.DataFrame | None) -> str:
    """The summary's caveat on in-batch false negatives: the confound (`confounded`: the directions where batches
    held many), and, once the grid is trained again with them masked (`masked_where`), what the mask changed
    (`effect`, :func:`setting_effect`): nothing beyond noise in any column says the false negatives do not explain the
    verdicts; a change names the systems and columns and sends the reader to the masked section's verdicts."""
    text = (f"**Caveat** ({', '.join(confounded)}): the training batches held in-batch false negatives (an item's "
            "answer text as another query's negative), far more in same-language batches than in X-Y's")
    link = "[In-batch false negatives](#in-batch-false-negatives)"
    if masked_where is None:
        return text + f", so hybrid's verdicts against X-Y there are confounded: see {link}."
    pointer = text + f": see {link}. The section \"{masked_where}\" trains that grid again with them masked"
    if effect is None:
        return pointer + "."
    if effect.seeds.min() < 2:  # a system with one masked seed: no claim either way
        return pointer + "; some system has one masked seed so far, not yet a claim."
    moved = {system: verdict_words(group) for system, group in effect.groupby("baseline", sort=False)
             if group.verdict.str.rstrip("?").isin(["win", "loss"]).any()}
    if not moved:
        return (text + f". Trained again with them masked (section \"{masked_where}\"), no system "
                f"({', '.join(dict.fromkeys(effect.baseline))}) changes beyond noise in any column, so the false "
                "negatives do not explain hybrid's verdicts against X-Y there.")
    return (text + f". Trained again with them masked (section \"{masked_where}\"), "
            + "; ".join(f"{system} is {words}" for system, words in moved.items())
            + ": read hybrid's verdicts against X-Y there beside that section's.")


def setting_effect(before: dict[str, Any], after: dict[str, Any], n: int, seed: int) -> pd.DataFrame | None:
    """What a change of setting does to each trained system of one direction: its runs at the new setting
    (``after``) minus its runs at the old one (``before``), the same seeds and evaluation set, every column, in
    :func:`seed_tables.verdict_table`'s shape with the system in the "baseline" column, "win" meaning the new
    setting is better, and "seeds" the fewer of the two sides' seeds. The report's masked section uses it (masked
    minus unmasked); ``benchmarks/grid_at_setting.py`` for a speed path (length_groups 4 minus 1). ``before`` and
    ``after``: :func:`direction_section`'s sections. None when no system has both."""
    both = [s for s in SYSTEMS if not is_zero_shot(s) and s in after["results"] and s in before["results"]]
    if not both:
        return None
    table = _verdicts({s: (after["results"][s], before["results"][s]) for s in both}, n, seed,
                      list(seed_stats.REPORTED))
    seeds = {s: min(len(after["results"][s]), len(before["results"][s])) for s in both}
    return table.assign(seeds=table.baseline.map(seeds))  # the fewer of the two sides' seeds


# ---- how firm the verdicts are: the grid again at another setting (profile key robustness_settings) -----

#: the report's section (and its anchor) on the grid read again at the profile's ``robustness_settings``
FIRM_TITLE = "How firm the verdicts are"


def paired(before: list[dict], after: list[dict]) -> tuple[list[dict], list[dict]]:
    """The entries of each side whose (system, seed) is finished on both sides, in the same order."""
    keys = {(e["run"].label, e["run"].seed) for e in before} & {(e["run"].label, e["run"].seed) for e in after}
    pick = lambda entries: sorted((e for e in entries if (e["run"].label, e["run"].seed) in keys),  # noqa: E731
                                  key=lambda e: (e["run"].label, e["run"].seed))
    return pick(before), pick(after)


def verdict_changes(before: dict, after: dict) -> list[dict]:
    """Hybrid against each baseline: the columns whose verdict (the report's rule) differs between two
    :func:`direction_section` sections of the same direction."""
    b = before["verdicts"].set_index(["baseline", "column"]).verdict
    a = after["verdicts"].set_index(["baseline", "column"]).verdict
    return [{"baseline": key[0], "column": key[1], "before": b[key], "after": a[key]}
            for key in b.index if key in a.index and a[key] != b[key]]


def setting_words(settings: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items())


def robustness(params: dict[str, Any], sections: dict[str, dict], groups: dict[str, str],
               zero_shots: dict[str, dict[str, dict]], n: int, seed: int) -> dict[str, Any] | None:
    """The report's grid read again at the profile's ``robustness_settings`` (e.g. ``{length_groups: 1}``: the same
    loss on the other speed path, with other dropout masks and bf16 rounding) from committed runs: nothing trains.

    For each direction shown (``groups``: {where: its recipe group}) whose runs at that setting have all finished:
    each system's change (:func:`setting_effect`, the other setting minus the report's, same seeds) and hybrid's
    verdicts that differ between the two settings (:func:`verdict_changes`). A verdict that turns under a change
    that moves no system beyond noise against itself sits at the edge of the verdict rule: the summary says so.
    None when the profile has no ``robustness_settings``."""
    other = recipe.robustness_params(params)
    if other is None:
        return None
    planned = recipe.grid_runs(other) + recipe.masked_runs(other)
    done = recipe.train(planned, compute=False)  # nothing trains here
    parts: dict[str, dict] = {}
    for where, group in groups.items():
        if where not in sections:
            continue
        want = [r for r in planned if r.group == group]
        entries = [e for e in done if e["run"].group == group]
        part: dict[str, Any] = {"planned": len(want), "finished": len(entries)}
        if want and len(entries) == len(want):
            dataset = sections[where]["dataset"]
            sec = direction_section(by_label(entries, SYSTEMS), dataset, n, seed, zero_shots.get(dataset, {}))
            part.update(effect=setting_effect(sections[where], sec, n, seed),
                        changes=verdict_changes(sections[where], sec), summary=summary_lines(where, sec["verdicts"]))
        parts[where] = part
    settings = recipe.robustness_settings(params)
    return {"setting": setting_words({k: there for k, (_, there) in settings.items()}),
            "own": setting_words({k: here for k, (here, _) in settings.items()}), "parts": parts}


def effect_lines(effect: pd.DataFrame, comparison: str) -> list[str]:
    """A change of setting's effect (:func:`setting_effect`) as its table, then one sentence per system saying what
    its row says: "- X-Y: ``comparison`` (3 seeds), no different beyond noise in any of the 10 columns."."""
    lines = [frame_markdown(verdict_wide(effect).rename_axis("system"), index="system"), ""]
    for system, group in effect.groupby("baseline", sort=False):
        k = group.seeds.min()
        lines.append(f"- {system}: {comparison} ({k} seed{'s' if k > 1 else ''}), "
                     f"{verdict_words(group)}{'' if k > 1 else ONE_SEED}.")
    return lines + [""]


_VERDICT_WORD = {"win": "better", "loss": "worse", "no difference": "no different"}


def firm_paragraph(firm: dict[str, Any] | None) -> str | None:
    """The summary's paragraph on :func:`robustness`: whether any system moved beyond noise against itself at the
    other setting, and every verdict of hybrid that turns there, named (these are borderline); the directions not
    yet trained at that setting are named too. None without ``robustness_settings``."""
    if firm is None or not firm["parts"]:
        return None
    compared = {w: p for w, p in firm["parts"].items() if "effect" in p}
    pending = [f"{w} ({p['finished']} of {p['planned']} runs)" for w, p in firm["parts"].items() if "effect" not in p]
    text = (f"**How firm** ([{FIRM_TITLE.lower()}](#{FIRM_TITLE.lower().replace(' ', '-')})): the grid was also trained "
            f"at `{firm['setting']}` (this report: `{firm['own']}`)")
    if not compared:
        return text + f"; not compared yet: {', '.join(pending)} at that setting so far."
    moved = []
    for where, part in compared.items():
        effect = part["effect"]
        if effect is None:
            continue
        hit = effect[effect.verdict.str.rstrip("?").isin(["win", "loss"])]
        moved += [f"{r.baseline} on {r.column} ({where})" for r in hit.itertuples()]
    cells = sum(0 if p["effect"] is None else len(p["effect"]) for p in compared.values())
    text += (". No system moved beyond noise against its own runs there, in any of the "
             f"{cells} system-column cells" if not moved else
             f". Beyond noise against its own runs there: {'; '.join(moved)} ({len(moved)} of {cells} "
             "system-column cells)")
    changes = [(w, c) for w, p in compared.items() for c in p["changes"]]
    if not changes:
        text += ". Hybrid's verdicts are the same at both settings in every column."
    else:
        grouped: dict[tuple, list[str]] = {}  # one clause per direction, baseline and pair of verdicts
        for w, c in changes:
            key = (w, c["baseline"], _VERDICT_WORD[c["before"].rstrip("?")], _VERDICT_WORD[c["after"].rstrip("?")])
            grouped.setdefault(key, []).append(c["column"])
        said = "; ".join(f"{w}, against {b}: {', '.join(cols)} ({here} here, {there} there)"
                         for (w, b, here, there), cols in grouped.items())
        text += (f". Yet {len(changes)} of hybrid's verdicts turn between the two settings: {said}. These sit at the "
                 "edge of the verdict rule" + (" (the setting moves no system beyond noise)" if not moved else "")
                 + ": read them as borderline, not as findings.")
    if pending:
        text += f" Not compared yet: {', '.join(pending)} at that setting so far."
    return text


def firm_lines(firm: dict[str, Any] | None) -> list[str]:
    """The report's section on :func:`robustness`: per direction, each system's change and the turned verdicts."""
    if firm is None or not firm["parts"]:
        return []
    lines = [f"## {FIRM_TITLE}", "",
             f"The grid trained again at `{firm['setting']}` (this report: `{firm['own']}`), read from committed runs. "
             "Each system's runs there minus its runs here (the same seeds; the verdict rule above, \"win\": better "
             "there), then hybrid's verdicts at both settings where they differ, and the summary at that setting.", ""]
    for where, part in firm["parts"].items():
        lines += [f"### {where}", ""]
        if "effect" not in part:
            lines += [f"{part['finished']} of its {part['planned']} runs at `{firm['setting']}` have finished: not "
                      "compared yet.", ""]
            continue
        if part["effect"] is not None:
            lines += effect_lines(part["effect"], f"`{firm['setting']}` against `{firm['own']}`")
        changes = part["changes"]
        lines += [f"Hybrid's verdicts that differ between the settings: {len(changes)}" + (":" if changes else "."),
                  ""]
        if changes:
            rows = [{"baseline": c["baseline"], "column": c["column"], f"here ({firm['own']})": c["before"],
                     f"there ({firm['setting']})": c["after"]} for c in changes]
            lines += [reporting.markdown_table(rows), ""]
        lines += [f"Summary at `{firm['setting']}`:", "", *[f"- {x}" for x in part["summary"]], ""]
    return lines


_SENTENCE = re.compile(r"^(?P<where>.+?): against (?P<baseline>[^,]+), hybrid is (?P<rest>.*?)"
                       r"(?: \(one seed[^)]*\))?\.$")


def check_summary(lines: list[str], tables: dict[str, pd.DataFrame]) -> None:
    """Raise ValueError when a summary sentence does not say what its verdict table says: every column it
    calls better / worse must have that verdict, and the count of the rest must be the number of columns with
    no difference. ``tables``: {where: verdict table} as :func:`summary_lines` was given them."""
    for line in lines:
        m = _SENTENCE.match(line)
        if not m:
            raise ValueError(f"a summary sentence the check cannot read (a name with ', '?): {line!r}")
        where, baseline, rest = m["where"], m["baseline"], m["rest"]
        if where not in tables:
            raise ValueError(f"the summary names {where!r}, which has no verdict table")
        group = tables[where][tables[where].baseline == baseline]
        if group.empty:
            raise ValueError(f"the summary names baseline {baseline!r} absent from the {where} table")
        actual = dict(zip(group.column, group.verdict.str.rstrip("?")))
        claimed: dict[str, str] = {}
        for part in rest.split("; "):
            for verdict, word in _WORDS.items():
                if part.startswith(f"{word} on "):
                    for column in part[len(word) + 4:].split(", "):
                        claimed[column] = verdict
        for column, verdict in claimed.items():
            if actual.get(column) != verdict:
                raise ValueError(f"the summary says hybrid is {_WORDS[verdict]} than {baseline} on {column} "
                                 f"({where}), the table says {actual.get(column, 'nothing')}")
        ties = sum(v == "no difference" for v in actual.values())
        said = re.search(r"the other (\d+)|any of the (\d+) columns", rest)
        said_ties = int(next(g for g in said.groups() if g)) if said else 0
        if said_ties != ties or len(claimed) + ties != len(actual):
            raise ValueError(f"the summary of {where} against {baseline} counts {said_ties} column(s) with no "
                             f"difference and names {len(claimed)}; the table has {ties} and {len(actual)} in all")


# ---- the recipe's probes ------------------------------------------------------------------------------


def probe_frame(probes: dict[str, list[dict]], chosen: dict[str, Any], eval_data: str) -> pd.DataFrame:
    """One row per probe run (a run shared by two stages once): the held-out pool's mAPs and score (the
    criterion), and the evaluation set's as context."""
    rows, seen_dirs = [], set()
    for stage, entries in probes.items():
        for e in entries:
            if e["dir"] in seen_dirs:
                continue
            seen_dirs.add(e["dir"])
            p, res = e["run"].params, e["results"]
            pool = res[runs.VALIDATION_POOL]
            test = res["datasets"].get(eval_data, {})
            is_chosen = all(p[k] == chosen.get(k) for k in ("candidate_mode", "max_length", "temperature", "steps"))
            rows.append({
                "stage": stage, "input": recipe.input_label(p["candidate_mode"], p["max_length"]),
                "temperature": p["temperature"], "steps": p["steps"], "chosen": "yes" if is_chosen else "",
                **{f"held-out {s} mAP": round(pool[s]["map"]["value"], 4) for s in ("mono", "cross", "multi")},
                "held-out score": round(e["score"], 4),
                **{f"{eval_data} {s} mAP": round(test[s]["map"]["value"], 3) for s in ("mono", "cross", "multi")
                   if s in test},
                "train min": round(res["timings"]["train_s"] / 60, 1)})
    return pd.DataFrame(rows)


# ---- the ratio sweeps -----------------------------------------------------------------------------------


def sweep_section(entries: list[dict], dataset: str, n: int, seed: int) -> dict[str, Any] | None:
    """Per sweep point (every seed): the seed summary of the headline columns and the point minus alpha = 0.5
    with its verdict. None until the reference point and one other have finished runs."""
    points = by_label(entries)
    if sweep.REFERENCE not in points or len(points) < 2:  # nothing to compare the reference with yet
        return None
    results = {label: [compare.load_per_query(e["dir"], dataset) for e in es] for label, es in points.items()}
    verdicts = _verdicts({label: (r, results[sweep.REFERENCE]) for label, r in results.items()
                          if label != sweep.REFERENCE}, n, seed, list(HEADLINE), name="point")
    weights = {label: es[0]["results"]["training"]["weights"] for label, es in points.items()}
    return {"summaries": _summaries(results, n, seed, list(HEADLINE)), "verdicts": verdicts, "weights": weights,
            "seeds": {label: len(es) for label, es in points.items()}}


def plot_sweep(sec: dict, dataset: str, title: str):
    """The text sweep against alpha (:func:`seed_tables.plot_alpha_sweep`), one panel per headline column."""
    columns = {key: seed_tables.column(key) + (" (lower is better)" if key == "rank_distance" else "") for key in HEADLINE}
    return seed_tables.plot_alpha_sweep(sec["summaries"], columns, title)


def verdict_wide(verdicts: pd.DataFrame, row: str = "baseline") -> pd.DataFrame:
    """Rows: baselines (or sweep points); columns: the compared columns; cells 'diff [low, high] verdict'."""
    return seed_tables.wide(verdicts, row, lambda r: reporting.interval(
        r.diff, r.low, r.high, compare.digits(r.key) + 1, sign=True) + f" {r.verdict}")


def _paper_table1(paper_rows: pd.DataFrame | None) -> pd.DataFrame | None:
    if paper_rows is None:
        return None
    keep = ["model", "strategy"] + [c for c in ("mono_map", "cross_map", "multi_map", "rank_distance")
                                    if c in paper_rows.columns]
    out = paper_rows[keep].copy()
    out.insert(0, "system", [f"paper: {m} {s}" for m, s in zip(out.model, out.strategy)])
    return out.drop(columns=["model", "strategy"])


def build(params: dict[str, Any], zero_shots: dict[str, dict[str, dict]], image_text: dict | None = None,
          write: bool = True) -> dict[str, Any]:
    """Collect every finished recipe run, compute every section, check the summary against the verdicts, and
    write ``reports/REPORT.md`` with its figures under ``reports/<profile>/figures/``.

    ``zero_shots``: {dataset: {label: {"results", "dir"}}}: the untrained model in the recipe's input ("zero-shot")
    and in other inputs ("zero-shot (sentence@64)"), each a baseline of hybrid (:func:`recipe.zero_shot_rows`);
    ``image_text``: the image-text sweep's part, ``{"section", "lines", "figures"}``
    (:func:`hybridnb.studies.image_text_sweep.report_part`), or None.
    Returns {"text", "path", "sections", "figures"}.
    """
    import matplotlib.pyplot as plt

    from hybridnb.paths import reports_root

    n, seed = params["n_resamples"], params["seed"]
    collected = recipe.collect(params, train_missing=False, show_progress=False, stages=("probes",))
    chosen = collected["chosen"]
    own = {k: params[k] for k in ("candidate_mode", "max_length", "temperature", "steps")}
    finished = lambda planned: recipe.train(planned, compute=False)  # noqa: E731  (nothing trains here)
    grid_planned = recipe.grid_runs(params)
    grid = finished(grid_planned)
    sweep_entries = finished(recipe.sweep_runs(params)) if (params.get("alphas") or params.get("mixtures")) else []
    forward = [e for e in grid if e["run"].group == "grid"]
    reverse = [e for e in grid if e["run"].group == "reverse"]
    # the reverse grid again with in-batch false negatives masked (recipe stage "masked"): shown when run
    masked = finished(recipe.masked_runs(params))  # none without recipe_reverse
    train, evaluated = params["train_data"], params["eval_data"]
    sections: dict[str, Any] = {}
    figures: dict[str, Any] = {}
    directions = [(f"{train} → {evaluated}", forward, evaluated, evaluated),
                  (f"{evaluated} → {train}", reverse, train, train),
                  (f"{evaluated} → {train}, {MASKED}", masked, train, f"{train}_fnmask")]
    for where, entries, dataset, slug in directions:
        sec = direction_section(by_label(entries, SYSTEMS), dataset, n, seed, zero_shots.get(dataset, {}))
        if sec is not None:
            sections[where] = {**sec, "slug": slug}
            shown = dataset + (f" ({MASKED})" if where.endswith(MASKED) else "")  # the figures' titles say which
            figures[f"figures/points_{slug}.png"] = seed_tables.plot_points(sec["summaries"], shown)
            figures[f"figures/differences_{slug}.png"] = seed_tables.plot_differences(sec["verdicts"], shown)
    if forward:  # the validation curves of every forward run: where the budget flattens
        from hybridnb.training import checkpoints

        logs: dict[str, dict[int, list]] = {}
        for e in forward:
            logs.setdefault(e["run"].label, {})[e["run"].seed] = checkpoints.read_log(
                Path(e["dir"]) / "train_log.jsonl", math.inf)
        figures["figures/validation_curves.png"] = seed_tables.plot_validation_curves(logs)
    masked_where, reverse_where = directions[2][0], directions[1][0]
    if masked_where in sections and reverse_where in sections:  # the mask's own effect, system by system
        sections[masked_where]["effect"] = setting_effect(sections[reverse_where], sections[masked_where], n, seed)
    # the same grid at the profile's robustness_settings (committed runs): which verdicts turn there
    firm = robustness(params, sections, dict(zip((d[0] for d in directions), ("grid", "reverse", "masked"))),
                      zero_shots, n, seed)
    fwd_where = directions[0][0]
    split = None
    if fwd_where in sections:
        trained_langs = params.get("train_languages") or list(config.DATASET_LANGUAGES[train])
        split = seen_unseen_section(sections[fwd_where], list(trained_langs), n, seed)
    sweep_sec = sweep_section(sweep_entries, evaluated, n, seed) if sweep_entries else None
    if sweep_sec is not None:
        figures[f"figures/ratio_sweep_{evaluated}.png"] = plot_sweep(sweep_sec, evaluated,
                                                                    f"text, {train} → {evaluated}")
    mm_sec = None if image_text is None else image_text["section"]
    if image_text is not None:
        figures.update(image_text["figures"])
    # the summary, from the verdict tables, checked before anything is written
    tables = {where: sec["verdicts"] for where, sec in sections.items()}
    lines = [line for where, sec in sections.items() for line in summary_lines(where, sec["verdicts"])]
    if split is not None:
        where = f"{fwd_where}, seen vs unseen languages"
        tables[where] = split["verdicts"]
        lines += summary_lines(where, split["verdicts"])
    check_summary(lines, tables)
    prov = reporting.provenance(params["profile"])
    false_negatives, confounded = None, []
    if grid:  # the batches of the grid's runs, replayed (kept by run hash in reports/<profile>/batch_audit.json)
        from hybridnb.studies import batch_audit

        audit = batch_audit.saved_audit(params)
        masked_names = sorted(Path(e["dir"]).name for e in masked)  # this setting's masked runs (not another's)
        false_negatives = batch_audit.report_lines(audit, params["batch_size"], masked_names)
        confounded = batch_audit.confounded(audit)
    text = report_markdown(params, prov, collected, chosen, own, grid_planned, grid, sections, split, sweep_sec,
                           sweep_entries, image_text, lines, list(figures), false_negatives, confounded, firm)
    out = reports_root() / "REPORT.md"
    if write:
        for rel, fig in figures.items():
            reporting.save_figure(fig, reports_root() / params["profile"] / rel)
        reporting.write_text(out, text)
        from hybridnb.paths import repo_root

        root = repo_root()
        if root is not None and out == root / "reports" / "REPORT.md" and (root / "README.md").is_file():
            update_readme(root / "README.md", text)  # the README's result block is the report's, never typed
    for fig in figures.values():
        plt.close(fig)
    return {"text": text, "path": out, "sections": sections, "split": split, "sweep": sweep_sec, "mm_sweep": mm_sec,
            "figures": figures, "summary": lines, "robustness": firm}


HEADLINE_START = "<!-- headline: generated from reports/REPORT.md -->"
HEADLINE_END = "<!-- /headline -->"


def headline(report_text: str) -> str:
    """The README's result block, cut from REPORT.md: its first direction's system table, and the summary
    sentences of every direction against the trained baselines (those against the zero-shot rows, the masked grid's
    and the seen/unseen ones stay in the report, linked; the caveat says what the mask changed), then the summary's
    paragraphs, after the interim line when the grid is not finished."""
    lines = report_text.splitlines()
    interim = next((line for line in lines if line.startswith("**Interim**")), None)
    start = next((i for i, line in enumerate(lines) if line.startswith("## ") and " → " in line), None)
    if start is None:
        return "\n".join(filter(None, [interim, "No comparison has finished yet."]))
    where = lines[start][3:]
    table = []
    for line in lines[start + 1:]:
        if line.startswith("| "):
            table.append(line)
        elif table:
            break
    directions = [line[3:] for line in lines if line.startswith("## ") and " → " in line]
    summary = _section_lines(lines, "## Summary")  # sentences elsewhere (another setting's summary) stay there
    sentences = [(line, _SENTENCE.match(line[2:])) for line in summary if line.startswith("- ")]
    said = [line for line, m in sentences  # against the trained baselines (the masked grid: in the caveat below)
            if m and m["where"] in directions and not is_zero_shot(m["baseline"]) and not m["where"].endswith(MASKED)]
    masked = any(m and m["where"].endswith(MASKED) for _, m in sentences)
    said.append(f"- Against the zero-shot rows{', the grid with false negatives masked' if masked else ''} and seen "
                "vs unseen languages: [reports/REPORT.md](reports/REPORT.md#summary).")
    for line in summary:  # a paragraph of its own after the list, its links made to point into the report
        if line.startswith(("**Caveat**", "**How firm**")):
            said += ["", re.sub(r"\]\(#", "](reports/REPORT.md#", line)]
    out = [f"From `reports/REPORT.md` ({where}; mean over seeds [95% interval over seeds and questions]; the "
           "other direction's table is in the report):", "", *table, "", *said]
    if interim:
        out = [interim, "", *out]
    return "\n".join(out)


def _section_lines(lines: list[str], title: str) -> list[str]:
    """The lines under the heading ``title`` up to the next heading of the same level (all lines if absent)."""
    if title not in lines:
        return lines
    start = lines.index(title) + 1
    level = title.split(" ")[0] + " "
    end = next((i for i in range(start, len(lines)) if lines[i].startswith(level)), len(lines))
    return lines[start:end]


def update_readme(readme: Path, report_text: str) -> bool:
    """Replace the README's block between :data:`HEADLINE_START` and :data:`HEADLINE_END` with
    :func:`headline` (the markers kept); False when the README has no such block."""
    text = readme.read_text(encoding="utf-8")
    if HEADLINE_START not in text:
        return False
    before, rest = text.split(HEADLINE_START, 1)
    after = rest.split(HEADLINE_END, 1)[1] if HEADLINE_END in rest else rest.split("\n\n", 1)[-1]
    reporting.write_text(readme, f"{before}{HEADLINE_START}\n{headline(report_text)}\n{HEADLINE_END}{after}")
    return True


def report_markdown(params, prov, collected, chosen, own, grid_planned, grid, sections, split, sweep_sec,
                    sweep_entries, image_text, summary, figures, false_negatives: list[str] | None = None,
                    confounded: list[str] = (), firm: dict | None = None) -> str:
    from hybridnb.paths import reports_root

    profile = params["profile"]
    fig = lambda rel: f"{profile}/{rel}"  # noqa: E731  (REPORT.md sits in reports/, the figures in reports/<profile>/)
    seeds = params.get("seeds") or [params["seed"]]
    n_grid = len(grid_planned)
    lines = ["# Hybrid batch training: X-X-mono vs X-Y vs hybrid, with seeds, in both directions", "",
             reporting.stamp(prov), ""]
    if len(grid) < n_grid:
        lines += [f"**Interim**: {len(grid)} of the {n_grid} runs of the comparison have finished "
                  f"({len(seeds)} seeds x {len(params['strategies'])} strategies x 2 directions). The tables use the "
                  "finished runs only; `make reproduce` trains the rest (finished runs are reused by config hash).", ""]
    lines += ["## Summary", "",
              "What the verdict tables below say, sentence by sentence (generated from them and checked against them):",
              ""] + [f"- {s}" for s in summary] + [""]
    if not summary:
        lines += ["- No comparison yet: hybrid has no finished run.", ""]
    masked_where = [where for where in sections if where.endswith(MASKED)]
    if confounded:
        lines += [caveat(confounded, masked_where[0] if masked_where else None,
                         sections[masked_where[0]].get("effect") if masked_where else None), ""]
    firm_text = firm_paragraph(firm)
    if firm_text:
        lines += [firm_text, ""]
    decided = all(chosen.get(k) is not None for k in own)
    mismatch = decided and chosen != own
    resolved = sorted({e["run"].cfg.train_dtype for e in grid})  # what "auto" was on the machines that trained
    precision = (f"precision `{params['train_dtype']}`" + (" (bf16 autocast where the CPU has native bf16, else "
                 f"float32; these runs: {', '.join(resolved)})" if params["train_dtype"] == "auto" and resolved else ""))
    lines += ["## The recipe", "",
              f"- Model `{params['model']}`, trained with InfoNCE and in-batch negatives plus "
              f"{params['n_hard_negatives']} hard negative (another sentence of the same paragraph), batch "
              f"{params['batch_size']}, lr {params['lr']:g}, weight decay {params['weight_decay']:g}, warm-up "
              f"{params['warmup_ratio']:g} then linear decay to zero, {precision}.",
              f"- {'Chosen on held-out data' if decided and not mismatch else 'The profile'}: candidates as "
              f"**{own['candidate_mode']}** at **{own['max_length']}** tokens, temperature **{own['temperature']:g}**, "
              f"**{own['steps']}** steps"
              + ("." if decided else " (the probes below have not decided every setting yet).")
              + " The evaluated checkpoint is the one with the lowest validation loss.",
              f"- Seeds {seeds}: a seed changes the batch kinds, languages and items drawn and the dropout masks; the "
              "data, hard negatives and validation split are the same for every seed.",
              "- **The verdict rule**, used everywhere below: a column's value is the mean over seeds; its 95% interval "
              "counts both training seeds and questions (mean ± t(df)·sqrt(seed variance / S + question-bootstrap "
              "variance), Welch–Satterthwaite df, `hybridnb.evaluation.seed_stats`). Hybrid *wins* or *loses* a column "
              "against a baseline only when the interval of the difference excludes 0; otherwise *no difference*. "
              "Zero-shot has no training, so no seed variance. No verdict is drawn from one seed (marked `?`).",
              f"- Our setup is not the paper's: `{params['model']}` instead of XLM-R / LaBSE, one QA dataset at a time "
              f"({params['train_data']} one way, {params['eval_data']} the other) instead of mMARCO plus 8 QA sets, "
              f"batch {params['batch_size']} instead of 100, a 2-core CPU budget. Compare directions of effect with "
              "the paper, not values.", ""]
    if mismatch:
        lines += [f"**The profile's recipe {own} is not what the probes chose ({chosen}).**", ""]
    probes = collected["probes"]
    if probes:
        frame = probe_frame(probes, chosen if decided else {}, params["eval_data"])
        lines += ["### How the recipe was chosen", "",
                  "Each probe is hybrid at seed 0, scored on the **held-out validation pool**: the training set's "
                  "validation items (10%, never trained on) as a LAReQA pool, their questions in every training "
                  "language against every sentence of their paragraphs. The score is the mean of its mono, cross and "
                  "multi mAP. The evaluation sets never enter the choice: their columns are context. Stages, in order: "
                  "the input at the first temperature and budget (best score wins); the temperature at that input "
                  "(best wins); then longer budgets, each taken only if it adds at least "
                  f"{params.get('recipe_min_gain', 0):g} to the score of the budget taken before it (about one seed's "
                  "standard deviation), the first that does not stopping the search.", "",
                  frame_markdown(frame, index=None), ""]
        lines += _choice_lines(probes, chosen, params.get("recipe_min_gain", 0)) + [""]
        pending = [s for s in recipe.STAGES if s not in (["input"] if "candidate_mode" in chosen else []) +
                   (["temperature"] if "temperature" in chosen else []) + (["budget"] if chosen.get("steps") else [])]
        if pending:
            lines += [f"Stages not finished yet: {', '.join(pending)}.", ""]
    for where, sec in sections.items():
        dataset, slug = sec["dataset"], sec.get("slug", sec["dataset"])
        labels = {"zero-shot": f"zero-shot ({own['candidate_mode']}@{own['max_length']})"}
        lines += [f"## {where}", ""]
        if where.endswith(MASKED):
            lines += [f"The {where.split(',')[0]} grid trained again with `mask_false_negatives: true`: every in-batch "
                      "passage with the text of a query's own answer is left out of that query's softmax (the "
                      "zero-shot rows are the same as without the mask). Read its verdicts against the unmasked "
                      "section above: a verdict that holds in both does not come from the false negatives.", ""]
        lines += [f"Trained on {where.split(' → ')[0]}, evaluated zero-shot on {dataset}: every system, mean over "
                  "seeds [95% interval over seeds and questions]; rank distance: lower is better. The paper's rows "
                  "(XLM-R and LaBSE, its Table 1 and Tables 7-8, transcribed) sit below ours.", "",
                  frame_markdown(system_table(sec["summaries"], HEADLINE, labels)), "",
                  "Per-seed values (and their standard deviation over seeds):", "",
                  frame_markdown(seed_tables.per_seed_table(sec["summaries"])), ""]
        missing = [m for m in ("sentence+context", "sentence") if m != own["candidate_mode"]
                   and f"zero-shot ({recipe.input_label(m, own['max_length'])})" not in sec["summaries"]]
        if missing:
            lines += [f"Zero-shot with {', '.join(missing)} candidates at {own['max_length']} tokens: not computed "
                      "yet (`python -m hybridnb report` computes it), so that baseline is missing here.", ""]
        paper = _paper_table1(sec["paper_rows"])
        if paper is not None:
            lines += ["The paper's rows for the same evaluation set (not measured here):", "",
                      frame_markdown(paper, index=None), ""]
        lines += ["### Hybrid against every baseline, every column", "",
                  frame_markdown(verdict_wide(sec["verdicts"]), index="baseline"), "",
                  f"![points]({fig(f'figures/points_{slug}.png')})", "",
                  f"![differences]({fig(f'figures/differences_{slug}.png')})", ""]
        if not sec["paper"].empty:
            lines += ["Beside the paper (\"agrees\": our difference is beyond noise with the paper's sign):", "",
                      frame_markdown(sec["paper"], index=None), ""]
        if sec.get("effect") is not None:
            unmasked_where = where.split(",")[0]
            lines += ["### What the mask does to each system", "",
                      f"Each system's masked runs minus its runs in \"{unmasked_where}\" (the same seeds; the same "
                      "verdict rule, \"win\": the masked runs are better):", "",
                      *effect_lines(sec["effect"], "masked against unmasked")]
    lines += firm_lines(firm)
    lines += false_negatives or []
    if split is not None:
        lines += ["## Seen vs unseen languages", "",
                  f"After training on {params['train_data']}, {', '.join(split['unseen'])} were never trained on. "
                  "Mono mAP of queries in a seen vs an unseen language; cross mAP of language pairs with both "
                  "languages seen vs at least one unseen. The paper claims its gains carry to languages it never "
                  "trained on; this is where that can be tested.", "",
                  frame_markdown(system_table(split["summaries"], list(SPLIT_KEYS))), "",
                  frame_markdown(verdict_wide(split["verdicts"]), index="baseline"), ""]
        lines += _gain_lines(split["verdicts"]) + [""]
    lines += ["## The mix ratio", ""]
    if sweep_sec is None:
        lines += ["The text sweep: no point beside alpha = 0.5 has finished yet (`make sweep`).", ""]
    else:
        sweep_figure = fig(f"figures/ratio_sweep_{params['eval_data']}.png")
        lines += _sweep_lines(sweep_sec, params["eval_data"], "text") + [f"![sweep]({sweep_figure})", ""]
    if image_text is not None:
        lines += [line.replace("](figures/", f"]({profile}/figures/") for line in image_text["lines"]]
    if "figures/validation_curves.png" in figures:
        lines += ["## Validation curves", "",
                  f"Validation loss and MRR on the fixed held-out batches of every {params['train_data']} run, one line "
                  "per seed (the evaluated checkpoint is the one with the lowest validation loss).", "",
                  f"![validation curves]({fig('figures/validation_curves.png')})", ""]
    lines += miracl_eval.report_section(params)  # ours beside the paper's rows when notebook 09 ran, else "not run"
    lines += ["## Run times", "",
              frame_markdown(seed_tables.budget_rows(grid), index=None), ""] + _cost_lines(grid, n_grid, params)
    lines += ["",
              "## Other files", "",
              "- `reports/runs/<run>/`: every run's config, results, per-query arrays, training log and loss curve "
              "(the recipe's probes are the `<profile>-probe-*` folders).",
              f"- `reports/{profile}/zero_shot/`: the untrained models' results (notebooks 02 and 06); "
              f"`reports/{profile}/data/`: the datasets' statistics (notebook 01).",
              f"- `reports/{profile}/notebooks/`: the executed notebooks of the last `make reproduce`, with its outputs.",
              *[f"- `reports/{profile}/{name}`: {what}." for name, what in (
                  ("BACKBONES.md", "other backbones, zero-shot and fine-tuned (notebook 06)"),
                  ("MULTIMODAL.md", "the image-text study (its own recipe: frozen image tower, 800 steps)"),
                  ("BUDGET.md", "`make reproduce`'s wall time and memory"))
                if (reports_root() / profile / name).is_file()],  # only files that exist
              "- `reports/benchmarks/`: speed and memory benchmarks.", ""]
    return "\n".join(lines) + "\n"


def _choice_lines(probes: dict[str, list[dict]], chosen: dict, min_gain: float) -> list[str]:
    """Why each decided stage chose what it chose, in the probes' own numbers (one seed each: a choice, not a
    claim); a stage whose probes have not all finished says nothing yet."""
    out = []
    done = {"input": "candidate_mode" in chosen, "temperature": "temperature" in chosen,
            "budget": chosen.get("steps") is not None}
    for stage, entries in probes.items():
        if not entries or not done.get(stage):
            continue
        label = {"input": lambda p: recipe.input_label(p["candidate_mode"], p["max_length"]),
                 "temperature": lambda p: f"temperature {p['temperature']:g}",
                 "budget": lambda p: f"{p['steps']} steps"}[stage]
        chosen = recipe.choose(stage, entries, min_gain)
        scores = ", ".join(f"{label(e['run'].params)} {e['score']:.4f}" for e in entries)
        if stage == "budget":
            out.append(f"- Budget: {label(chosen['run'].params)} (held-out scores {scores}; a longer budget needs "
                       f"+{min_gain:g} over the one before it).")
        else:
            close = [e for e in entries if e is not chosen and chosen["score"] - e["score"] < min_gain]
            tie = ("" if not close or not min_gain else
                   f" A near-tie: within {min_gain:g} (about one seed's standard deviation) of "
                   + ", ".join(label(e["run"].params) for e in close) + ", so the held-out pool gives no evidence "
                   "that it is better than these; the rule, fixed before the probes ran, takes the highest score.")
            out.append(f"- {stage.capitalize()}: {label(chosen['run'].params)}, the highest held-out score ({scores})."
                       + tie)
    return out


def _cost_lines(grid: list[dict], n_grid: int, params: dict[str, Any]) -> list[str]:
    """What retraining the comparison costs (``make reproduce FRESH=1``), from the runs' own records, against the
    profile's budget: the sum of the runs' wall times (each trained and evaluated alone) and the highest peak
    resident memory any of them recorded. The zero-shot rows and the notebooks come on top."""
    walls = [e["results"].get("timings", {}).get("wall_s") for e in grid]
    if not grid or any(w is None for w in walls):
        return []
    minutes, budget = sum(walls) / 60, params.get("budget_minutes")
    machines = sorted({e["results"].get("provenance", {}).get("hardware", {}).get("cpu", "?") for e in grid})
    rss = [e["results"]["timings"].get("peak_rss_mb") for e in grid]
    which = f"these {len(grid)} of the {n_grid}" if len(grid) < n_grid else f"all {n_grid}"
    out = [f"- Retraining {which} runs from scratch (`make reproduce FRESH=1`) takes {minutes:.0f} minutes of recorded run "
           f"time on {', '.join(machines)} (2 cores), before the zero-shot rows and the notebooks"
           + ("." if not budget else f": {'within' if minutes <= budget else 'over'} the profile's budget of "
                                      f"{budget:g} minutes.")]
    if all(rss):
        peak, gb = max(rss) / 1000, params.get("budget_peak_rss_gb")
        out.append(f"- Highest peak resident memory recorded: {peak:.1f} GB (the peak of the process that trained "
                   "the run, which for a run trained after others in one process includes theirs)"
                   + ("." if not gb else f": {'within' if peak <= gb else 'over'} the budget of {gb:g} GB."))
    return out


def _gain_lines(verdicts: pd.DataFrame) -> list[str]:
    """Whether hybrid's difference from each baseline is the same on seen and unseen languages."""
    out = []
    for baseline, group in verdicts.groupby("baseline", sort=False):
        g = group.set_index("key")
        for setting in ("mono", "cross"):
            s, u = g.loc[f"{setting}_ap_seen"], g.loc[f"{setting}_ap_unseen"]
            overlap = s.low <= u.high and u.low <= s.high
            out.append(f"- {setting} mAP, hybrid minus {baseline}: seen {s['diff']:+.4f} ({s.verdict}), unseen "
                       f"{u['diff']:+.4f} ({u.verdict}); the two intervals "
                       + ("overlap: no evidence that the gain differs between seen and unseen languages."
                          if overlap else "do not overlap: the difference depends on whether the language was trained on."))
    return out


def _sweep_lines(sec: dict, dataset: str, side: str) -> list[str]:
    table = system_table(sec["summaries"], list(HEADLINE))
    table.insert(0, "weights (mono / cross / mixed)", [
        " / ".join(f"{sec['weights'][label].get(k, 0):g}" for k in ("mono", "cross", "mixed")) for label in table.index])
    v = sec["verdicts"]
    diffs = verdict_wide(v, row="point")
    one_seed = v.verdict.str.endswith("?")  # a point with one seed: no training noise measured, no verdict
    wins = v[~one_seed & (v.verdict != "no difference")]
    sentence = ("No point with several seeds differs from alpha = 0.5 beyond noise in any headline column."
                if wins.empty else "Differences from alpha = 0.5 beyond noise: " + "; ".join(
                    f"{r.point} {'better' if r.verdict.startswith('win') else 'worse'} than alpha = 0.5 on {r.column}"
                    for _, r in wins.iterrows()) + ".")
    pending = list(dict.fromkeys(v[one_seed].point))
    if pending:
        sentence += (f" Not yet a verdict (one seed so far, marked `?`: its interval leaves out training noise): "
                     f"{', '.join(pending)}.")
    return [f"{side.capitalize()}, evaluated on {dataset}: alpha is the share of X-X-mono batches (alpha = 0 is X-Y, "
            "1 is X-X-mono); the mixtures add `mixed` batches (every pair in its own random languages). Mean over "
            "seeds [95% interval over seeds and questions]:", "", frame_markdown(table, index="point"), "",
            "Each point minus alpha = 0.5 (verdicts by the rule above):", "", frame_markdown(diffs, index="point"), "",
            sentence, ""]
