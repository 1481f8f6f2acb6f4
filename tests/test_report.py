"""REPORT.md's parts (hybridnb.studies.report): the seen/unseen split, the verdict sections on hand-made
per-query results, and the summary that must say what its verdict tables say."""

from __future__ import annotations

import zlib
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from hybridnb.evaluation.metrics import EvalResult
from hybridnb.studies import report, seed_tables

LANGS = ["de", "el", "en", "th"]


def _result(level: float, seed: int, n_groups: int = 40) -> EvalResult:
    """Per-query metrics around ``level`` (every question group has one query per language)."""
    rng = np.random.default_rng(seed)
    L = len(LANGS)
    n = n_groups * L
    q_lang = np.tile(np.arange(L), n_groups)
    noise = lambda *shape: rng.normal(0, 0.05, shape)  # noqa: E731
    per_query = {f"{s}_{m}": np.clip(level + noise(n), 0, 1) for s in ("mono", "multi") for m in ("ap", "r@1", "r@10")}
    for m in ("ap", "r@1", "r@10"):
        cross = np.clip(level + noise(n, L), 0, 1)
        cross[np.arange(n), q_lang] = np.nan
        per_query[f"cross_{m}"] = cross
    per_query["rank_distance"] = np.abs(100 * (1 - level) + 10 * noise(n))
    return EvalResult(LANGS, per_query, q_lang, np.repeat(np.arange(n_groups), L))


def _entries(tmp_path, label: str, level: float, seeds=(0, 1, 2)) -> list[dict]:
    out = []
    for k in seeds:
        folder = tmp_path / f"{label}-{k}"
        _result(level + 0.002 * k, 100 * k + zlib.crc32(label.encode()) % 97).save(folder / "per_query_xquad-r.npz")
        out.append({"run": SimpleNamespace(label=label, seed=k, group="grid"), "dir": folder,
                    "results": {"datasets": {"xquad-r": {}}}})
    return out


def test_the_seen_unseen_split_averages_exactly_the_right_cells():
    r = _result(0.6, 0)
    split = report.split_seen_unseen(r, ["de", "en"])
    seen_q = np.isin(np.asarray(LANGS)[r.q_lang], ["de", "en"])
    # mono: the macro-average over the seen query languages of their mean AP
    by_lang = [r.per_query["mono_ap"][r.q_lang == x].mean() for x in range(4)]
    assert split.macro("mono_ap_seen") == pytest.approx(np.mean([by_lang[0], by_lang[2]]))
    assert split.macro("mono_ap_unseen") == pytest.approx(np.mean([by_lang[1], by_lang[3]]))
    # cross: cells (query language, pool language) with both seen: (de, en) and (en, de)
    cells = [r.per_query["cross_ap"][r.q_lang == q, p].mean() for q, p in ((0, 2), (2, 0))]
    assert split.macro("cross_ap_seen") == pytest.approx(np.mean(cells))
    others = [r.per_query["cross_ap"][r.q_lang == q, p].mean() for q in range(4) for p in range(4)
              if q != p and not (q in (0, 2) and p in (0, 2))]
    assert split.macro("cross_ap_unseen") == pytest.approx(np.mean(others))
    assert np.isnan(split.per_query["mono_ap_seen"][~seen_q]).all()
    assert split.macro("mono_ap") == r.macro("mono_ap")  # the original columns untouched


def test_direction_and_split_sections_compare_hybrid_with_every_baseline(tmp_path):
    systems = {"X-X-mono": _entries(tmp_path, "X-X-mono", 0.55), "X-Y": _entries(tmp_path, "X-Y", 0.70),
               "hybrid": _entries(tmp_path, "hybrid", 0.70)}
    zero = tmp_path / "zs"
    _result(0.40, 7).save(zero / "per_query_xquad-r.npz")
    other = tmp_path / "zs2"
    _result(0.45, 8).save(other / "per_query_xquad-r.npz")
    sec = report.direction_section(systems, "xquad-r", 200, 0, {"zero-shot": {"dir": zero},
                                                               "zero-shot (sentence@128)": {"dir": other}})
    v = sec["verdicts"]
    assert list(dict.fromkeys(v.baseline)) == ["X-X-mono", "X-Y", "zero-shot", "zero-shot (sentence@128)"]
    assert len(v) == 4 * 10
    by = v.set_index(["baseline", "key"]).verdict
    assert by["X-X-mono", "mono_ap"] == "win" and by["X-X-mono", "rank_distance"] == "win"
    assert by["X-Y", "cross_ap"] == "no difference"
    assert by["zero-shot (sentence@128)", "multi_ap"] == "win"
    split = report.seen_unseen_section(sec, ["de", "en"], 200, 0)
    assert split["unseen"] == ["el", "th"] and set(split["verdicts"].key) == set(report.SPLIT_KEYS)
    assert report.seen_unseen_section(sec, LANGS, 200, 0) is None  # nothing unseen: no section
    lines = report.summary_lines("mlqa-r → xquad-r", v)
    report.check_summary(lines, {"mlqa-r → xquad-r": v})
    assert lines[1] == "mlqa-r → xquad-r: against X-Y, hybrid is no different beyond noise in any of the 10 columns."


def test_a_summary_that_disagrees_with_its_table_is_refused():
    v = pd.DataFrame([{"baseline": "X-Y", "column": "mono map", "verdict": "win"},
                      {"baseline": "X-Y", "column": "multi map", "verdict": "loss"},
                      {"baseline": "X-Y", "column": "cross map", "verdict": "no difference"},
                      {"baseline": "zero-shot", "column": "mono map", "verdict": "win?"}])
    lines = report.summary_lines("a → b", v)
    assert lines == ["a → b: against X-Y, hybrid is better on mono map; worse on multi map; no different beyond "
                     "noise on the other 1.",
                     "a → b: against zero-shot, hybrid is better on mono map (one seed: training noise not measured, "
                     "not yet a claim)."]
    report.check_summary(lines, {"a → b": v})
    for bad, message in [(lines[0].replace("better on mono map", "better on cross map"), "the table says no difference"),
                         (lines[0].replace("worse on multi map", "better on multi map"), "the table says loss"),
                         (lines[0].replace("the other 1", "the other 2"), "counts 2"),
                         ("a → b: against X-Y, hybrid is no different beyond noise in any of the 3 columns.", "counts 3"),
                         ("c → d: against X-Y, hybrid is better on mono map.", "no verdict table"),
                         ("a → b: against zero-shot, other, hybrid is better on mono map.", "cannot read")]:
        with pytest.raises(ValueError, match=message):
            report.check_summary([bad], {"a → b": v})


def test_the_sweep_section_compares_every_point_with_alpha_one_half(tmp_path):
    entries = []
    for label, level in (("alpha=0", 0.60), ("alpha=0.5", 0.70), ("alpha=1", 0.70)):
        for e in _entries(tmp_path, label, level):
            e["results"]["training"] = {"weights": {"mono": 0.5, "cross": 0.5}}
            entries.append(e)
    sec = report.sweep_section(entries, "xquad-r", 200, 0)
    assert set(sec["verdicts"].point) == {"alpha=0", "alpha=1"}
    by = sec["verdicts"].set_index(["point", "key"]).verdict
    assert by["alpha=0", "mono_ap"] == "loss" and by["alpha=1", "mono_ap"] == "no difference"
    assert sec["seeds"] == {"alpha=0": 3, "alpha=0.5": 3, "alpha=1": 3}
    fig = report.plot_sweep(sec, "xquad-r", "text")
    assert "3 seeds" in fig._suptitle.get_text()
    assert report.sweep_section([e for e in entries if e["run"].label != "alpha=0.5"], "xquad-r", 200, 0) is None


def test_the_split_columns_are_named_for_the_report():
    assert seed_tables.column("cross_ap_unseen") == "cross (any unseen) map"
    assert seed_tables.column("mono_ap_seen") == "mono (seen) map"
    with pytest.raises(ValueError, match="holds ', '"):  # the summary could not be checked against the table
        report.summary_lines("a → b", pd.DataFrame([{"baseline": "X-Y", "column": "mono, seen", "verdict": "win"}]))


def test_the_readme_result_block_is_the_committed_reports():
    """README's result block is cut from reports/REPORT.md by report.headline, never typed by hand."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text(encoding="utf-8")
    block = readme.split(report.HEADLINE_START, 1)[1].split(report.HEADLINE_END, 1)[0].strip()
    assert block == report.headline((root / "reports" / "REPORT.md").read_text(encoding="utf-8")).strip()
    assert "Generated by hybridnb" in (root / "reports" / "REPORT.md").read_text(encoding="utf-8")


def test_a_choice_within_one_seeds_sd_of_another_is_reported_as_a_near_tie():
    from hybridnb.studies import recipe

    def probe(mode, length, score):
        return {"score": score, "run": recipe.RecipeRun("input", "", 0, {"candidate_mode": mode, "max_length": length})}

    entries = [probe("sentence+context", 64, 0.6734), probe("sentence", 128, 0.6753), probe("sentence+context", 256, 0.6646)]
    chosen = {"candidate_mode": "sentence", "max_length": 128}
    (line,) = report._choice_lines({"input": entries}, chosen, 0.005)
    assert line.startswith("- Input: sentence@128, the highest held-out score")
    assert "A near-tie: within 0.005" in line and "of sentence+context@64, so" in line  # 256 is 0.011 below: not close
    (clear,) = report._choice_lines({"input": [entries[0], probe("sentence", 128, 0.69)]}, chosen, 0.005)
    assert "near-tie" not in clear


def test_the_cost_lines_sum_the_runs_own_records_against_the_budget():
    def entry(wall_s, rss_mb):
        return {"results": {"timings": {"wall_s": wall_s, "peak_rss_mb": rss_mb},
                            "provenance": {"hardware": {"cpu": "AMD EPYC"}}}}

    params = {"budget_minutes": 150, "budget_peak_rss_gb": 10}
    over = report._cost_lines([entry(600, 9000)] * 18, 18, params)
    assert over[0].startswith("- Retraining all 18 runs") and "180 minutes" in over[0]
    assert "over the profile's budget of 150 minutes" in over[0]
    assert "9.0 GB" in over[1] and "within the budget of 10 GB" in over[1]
    part = report._cost_lines([entry(600, 11000)] * 4, 18, params)
    assert "these 4 of the 18 runs" in part[0] and "40 minutes" in part[0] and "within the profile's" in part[0]
    assert "over the budget of 10 GB" in part[1]
    assert report._cost_lines([{"results": {}}], 18, params) == []  # nothing recorded: no claim


def test_a_one_seed_sweep_point_is_never_called_beyond_noise(tmp_path):
    entries = []
    for label, level, seeds in (("alpha=0.5", 0.70, (0, 1, 2)), ("alpha=0.75", 0.60, (0,))):
        for e in _entries(tmp_path, label, level, seeds=seeds):
            e["results"]["training"] = {"weights": {"mono": 0.5, "cross": 0.5}}
            entries.append(e)
    sec = report.sweep_section(entries, "xquad-r", 200, 0)
    assert sec["verdicts"].verdict.str.endswith("?").all()  # a 0.1 drop, but one seed
    sentence = report._sweep_lines(sec, "xquad-r", "text")[-2]
    assert "beyond noise:" not in sentence and "No point with several seeds differs" in sentence
    assert "Not yet a verdict (one seed so far" in sentence and "alpha=0.75" in sentence


def test_the_sweep_figure_names_each_point_with_fewer_seeds():
    import matplotlib.pyplot as plt

    def point(values):
        return {"map": {"mean": float(np.mean(values)), "low": 0.0, "high": 1.0, "per_seed": list(values)}}

    summaries = {"alpha=0.0": point([0.5, 0.6, 0.7]), "alpha=0.25": point([0.5, 0.6]), "alpha=0.5": point([0.5, 0.6, 0.7]),
                 "alpha=0.75": point([0.5])}
    fig = seed_tables.plot_alpha_sweep(summaries, {"map": "mAP"}, "text")
    title = fig._suptitle.get_text()
    plt.close(fig)
    assert "alpha 0.25: 2 seeds, alpha 0.75: 1 seed so far (the others 3)" in title
    assert "with one seed the band is over questions only" in title
    summaries["alpha=0.75"] = point([0.5, 0.6])
    fig = seed_tables.plot_alpha_sweep(summaries, {"map": "mAP"}, "text")
    title = fig._suptitle.get_text()
    plt.close(fig)
    assert "alpha 0.25: 2 seeds, alpha 0.75: 2 seeds so far" in title and "one seed" not in title


def test_the_masked_reverse_grid_gets_its_own_section_figures_and_caveat_pointer(tmp_path):
    """recipe stage "masked": the reverse grid again with false negatives masked is a third section, titled as
    such, with its own figure files (not the unmasked reverse section's), and the caveat points to it."""
    from hybridnb import config

    systems = {"X-X-mono": _entries(tmp_path, "X-X-mono", 0.55), "X-Y": _entries(tmp_path, "X-Y", 0.70),
               "hybrid": _entries(tmp_path, "hybrid", 0.70)}
    sec = report.direction_section(systems, "xquad-r", 100, 0, {})
    params = config.load_profile("ci")
    reverse, masked = "xquad-r → mlqa-r", f"xquad-r → mlqa-r, {report.MASKED}"
    sections = {reverse: {**sec, "slug": "xquad-r"}, masked: {**sec, "slug": "xquad-r_fnmask"}}
    own = {k: params[k] for k in ("candidate_mode", "max_length", "temperature", "steps")}
    prov = {"commit": "x", "profile": "ci", "hardware": {"cuda": None, "cpu": "x", "cores": 2}, "created": "now"}
    text = report.report_markdown(params, prov, {"probes": {}}, {}, own, [], [], sections, None, None, [], None, [],
                                  [], confounded=[reverse])
    assert f"## {masked}" in text and "`mask_false_negatives: true`" in text
    assert "figures/points_xquad-r.png" in text and "figures/points_xquad-r_fnmask.png" in text
    assert f'The section "{masked}" trains that grid again with them masked.' in text
    text = report.report_markdown(params, prov, {"probes": {}}, {}, own, [], [], {reverse: sections[reverse]}, None,
                                  None, [], None, [], [], confounded=[reverse])
    assert report.MASKED not in text  # no masked runs: no section, no pointer


def test_the_mask_effect_compares_each_system_with_its_own_unmasked_runs(tmp_path):
    """The masked section's "what the mask does to each system": masked minus unmasked per system (here X-X-mono's
    masked runs are 0.10 higher, X-Y's the same, hybrid has no masked run), with its table and one sentence per
    system saying what the table says."""
    from hybridnb import config

    zero = tmp_path / "zs"
    _result(0.40, 7).save(zero / "per_query_xquad-r.npz")
    unmasked = report.direction_section({"X-X-mono": _entries(tmp_path / "u", "X-X-mono", 0.55),
                                         "X-Y": _entries(tmp_path / "u", "X-Y", 0.70),
                                         "hybrid": _entries(tmp_path / "u", "hybrid", 0.65)}, "xquad-r", 200, 0,
                                        {"zero-shot": {"dir": zero}})
    masked = report.direction_section({"X-X-mono": _entries(tmp_path / "m", "X-X-mono", 0.65),
                                       "X-Y": _entries(tmp_path / "u", "X-Y", 0.70),  # the very same runs
                                       "hybrid": _entries(tmp_path / "m", "hybrid", 0.65)}, "xquad-r", 200, 0,
                                      {"zero-shot": {"dir": zero}})
    masked["results"].pop("X-Y")  # one system without masked runs: left out, not compared with nothing
    assert "zero-shot" in masked["results"]  # the same untrained model on both sides: not a system the mask touches
    effect = report.setting_effect(unmasked, masked, 200, 0)
    assert list(dict.fromkeys(effect.baseline)) == ["X-X-mono", "hybrid"] and len(effect) == 2 * 10
    by = effect.set_index(["baseline", "key"])
    assert by.loc[("X-X-mono", "mono_ap"), "verdict"] == "win"
    assert by.loc[("X-X-mono", "mono_ap"), "diff"] == pytest.approx(0.10, abs=0.02)
    assert by.loc[("X-X-mono", "rank_distance"), "verdict"] == "win"  # lower is better: masked is lower here
    assert set(effect.seeds) == {3}
    assert report.setting_effect(unmasked, {"results": {}}, 200, 0) is None

    params = config.load_profile("ci")
    reverse, where = "xquad-r → mlqa-r", f"xquad-r → mlqa-r, {report.MASKED}"
    sections = {reverse: {**unmasked, "slug": "xquad-r"}, where: {**masked, "slug": "xquad-r_fnmask", "effect": effect}}
    own = {k: params[k] for k in ("candidate_mode", "max_length", "temperature", "steps")}
    prov = {"commit": "x", "profile": "ci", "hardware": {"cuda": None, "cpu": "x", "cores": 2}, "created": "now"}
    text = report.report_markdown(params, prov, {"probes": {}}, {}, own, [], [], sections, None, None, [], None, [],
                                  [], confounded=[reverse])
    assert "### What the mask does to each system" in text and '"xquad-r → mlqa-r" (the same seeds' in text
    sentences = [line for line in text.splitlines() if ": masked against unmasked (" in line]
    assert len(sentences) == 2 and sentences[0].startswith("- X-X-mono: masked against unmasked (3 seeds), better on ")
    table = text.split("### What the mask does to each system")[1]
    assert "| system |" in table and "| X-X-mono |" in table and "| X-Y |" not in table.split("- X-X-mono")[0]
    for system, group in effect.groupby("baseline", sort=False):  # each sentence is its table row in words
        assert f"- {system}: masked against unmasked (3 seeds), {report.verdict_words(group)}." in sentences


def test_the_caveat_says_what_the_mask_changed():
    """Before the masked runs: "confounded"; with them: no change beyond noise says the false negatives do not
    explain the verdicts, a change names the system and columns, as the effect table says."""
    rows = lambda system, verdicts: [{"baseline": system, "column": c, "verdict": v}  # noqa: E731
                                     for c, v in zip(("mono map", "cross map", "multi map"), verdicts)]
    where = f"xquad-r → mlqa-r, {report.MASKED}"
    assert "are confounded" in report.caveat(["xquad-r → mlqa-r"], None, None)
    nothing = pd.DataFrame(rows("X-X-mono", ["no difference"] * 3) + rows("X-Y", ["no difference"] * 3)).assign(seeds=3)
    text = report.caveat(["xquad-r → mlqa-r"], where, nothing)
    assert "no system (X-X-mono, X-Y) changes beyond noise in any column" in text and "do not explain" in text
    assert "confounded" not in text
    moved = pd.DataFrame(rows("X-X-mono", ["win", "no difference", "loss"]) + rows("X-Y", ["no difference"] * 3)).assign(
        seeds=3)
    text = report.caveat(["xquad-r → mlqa-r"], where, moved)
    assert ("X-X-mono is better on mono map; worse on multi map; no different beyond noise on the other 1: read "
            "hybrid's verdicts against X-Y there beside that section's.") in text and "X-Y is" not in text
    one_seed = nothing.assign(seeds=[1] * 3 + [3] * 3)  # "no difference" with one seed is not a claim either
    text = report.caveat(["xquad-r → mlqa-r"], where, one_seed)
    assert "one masked seed so far, not yet a claim" in text and "do not explain" not in text


def test_the_headline_keeps_the_trained_baselines_and_links_the_rest():
    text = "\n".join(["# Report", "", "## Summary", "",
                      "- a → b: against X-X-mono, hybrid is better on cross map; no different beyond noise on the other 9.",
                      "- a → b: against X-Y, hybrid is no different beyond noise in any of the 10 columns.",
                      "- a → b: against zero-shot, hybrid is better on mono map; no different beyond noise on the other 9.",
                      "- a → b, seen vs unseen languages: against X-Y, hybrid is worse on mono (seen) map.",
                      f"- a → b, {report.MASKED}: against X-Y, hybrid is worse on cross map; no different beyond noise "
                      "on the other 9.", "",
                      "## a → b", "", "| system | mono map |", "| --- | --- |", "| hybrid | 0.8 |", "",
                      f"## a → b, {report.MASKED}", ""])
    block = report.headline(text)
    assert "against X-X-mono" in block and "against X-Y, hybrid is no different" in block and "| hybrid | 0.8 |" in block
    assert "against zero-shot" not in block and "seen vs unseen languages: against" not in block
    assert report.MASKED + ": against" not in block  # the caveat paragraph says what the mask changed
    assert block.rstrip().endswith("- Against the zero-shot rows, the grid with false negatives masked and seen vs "
                                   "unseen languages: [reports/REPORT.md](reports/REPORT.md#summary).")


def test_the_report_reads_the_grid_again_at_robustness_settings_and_names_the_verdicts_that_turn(tmp_path,
                                                                                                 monkeypatch):
    """robustness_settings: the grid's runs at the other setting (committed; nothing trains) give each system's
    change against its own runs and hybrid's verdicts that differ; a direction not finished there is named, not
    compared. Here X-X-mono is 0.10 higher at the other setting, so hybrid's wins against it turn there."""
    from hybridnb import config

    params = {**config.load_profile("ci"), "robustness_settings": {"length_groups": 4}, "n_resamples": 200}
    here = {"X-X-mono": _entries(tmp_path / "h", "X-X-mono", 0.55), "X-Y": _entries(tmp_path / "h", "X-Y", 0.70),
            "hybrid": _entries(tmp_path / "h", "hybrid", 0.65)}
    there = [*_entries(tmp_path / "t", "X-X-mono", 0.65), *_entries(tmp_path / "h", "X-Y", 0.70),
             *_entries(tmp_path / "h", "hybrid", 0.65)]
    sec = report.direction_section(here, "xquad-r", 200, 0, {})
    forward, reverse = "mlqa-r → xquad-r", "xquad-r → mlqa-r"
    sections = {forward: {**sec, "slug": "xquad-r"}, reverse: {**sec, "slug": "mlqa-r"}}
    seen = {}

    def grid_runs(p):
        seen["length_groups"] = p["length_groups"]
        return [SimpleNamespace(group="grid")] * 9 + [SimpleNamespace(group="reverse")] * 9

    monkeypatch.setattr(report.recipe, "grid_runs", grid_runs)
    monkeypatch.setattr(report.recipe, "masked_runs", lambda p: [])
    # the forward grid finished there, and 4 of the 9 reverse runs (the first four entries, as reverse runs)
    reverse_done = [{**e, "run": SimpleNamespace(label=e["run"].label, seed=e["run"].seed, group="reverse")}
                    for e in there[:4]]
    monkeypatch.setattr(report.recipe, "train", lambda planned, compute: there + reverse_done)
    firm = report.robustness(params, sections, {forward: "grid", reverse: "reverse", "masked": "masked"}, {}, 200, 0)
    assert seen["length_groups"] == 4 and firm["setting"] == "length_groups=4" and firm["own"] == "length_groups=1"
    assert set(firm["parts"]) == {forward, reverse}  # no masked section here: not looked for
    assert firm["parts"][reverse] == {"planned": 9, "finished": 4}  # not finished there: named, not compared
    part = firm["parts"][forward]
    effect = part["effect"].set_index(["baseline", "key"])
    assert effect.loc[("X-X-mono", "mono_ap"), "verdict"] == "win"  # 0.10 higher there
    assert (part["effect"][part["effect"].baseline != "X-X-mono"].verdict == "no difference").all()
    turned = {(c["baseline"], c["column"]) for c in part["changes"]}
    assert ("X-X-mono", "mono map") in turned and all(c["before"] != c["after"] for c in part["changes"])
    assert not any(b == "X-Y" for b, _ in turned)

    text = report.firm_paragraph(firm)
    assert text.startswith("**How firm** ([how firm the verdicts are](#how-firm-the-verdicts-are))")
    assert "Beyond noise against its own runs there: X-X-mono on mono map (mlqa-r → xquad-r)" in text
    assert f"Yet {len(part['changes'])} of hybrid's verdicts turn" in text and "borderline" in text
    assert "mlqa-r → xquad-r, against X-X-mono: mono map, " in text and "(better here, no different there)" in text
    assert "Not compared yet: xquad-r → mlqa-r (4 of 9 runs) at that setting so far." in text
    lines = report.firm_lines(firm)
    assert lines[0] == "## How firm the verdicts are" and "4 of its 9 runs at `length_groups=4` have finished: not " \
        "compared yet." in lines
    assert any(line.startswith("- X-X-mono: `length_groups=4` against `length_groups=1` (3 seeds), better on")
               for line in lines)


def test_the_firm_paragraph_says_plainly_when_nothing_moved_and_verdicts_still_turn():
    """No system beyond noise against itself, yet a verdict turns: borderline, said as such; nothing turns: said."""
    cell = lambda system, column, verdict: {"baseline": system, "column": column, "verdict": verdict, "seeds": 3}  # noqa: E731
    effect = pd.DataFrame([cell(s, c, "no difference") for s in ("X-X-mono", "X-Y", "hybrid")
                           for c in ("cross map", "multi map")])
    firm = {"setting": "length_groups=1", "own": "length_groups=4", "parts": {"b → a": {
        "planned": 9, "finished": 9, "effect": effect, "summary": [],
        "changes": [{"baseline": "X-Y", "column": "cross map", "before": "no difference", "after": "loss"}]}}}
    text = report.firm_paragraph(firm)
    assert "No system moved beyond noise against its own runs there, in any of the 6 system-column cells" in text
    assert ("Yet 1 of hybrid's verdicts turn between the two settings: b → a, against X-Y: cross map (no different "
            "here, worse there). These sit at the edge of the verdict rule (the setting moves no system beyond "
            "noise): read them as borderline, not as findings.") in text
    firm["parts"]["b → a"]["changes"] = []
    assert report.firm_paragraph(firm).endswith("Hybrid's verdicts are the same at both settings in every column.")
    assert report.firm_paragraph(None) is None


def test_robustness_settings_are_checked_before_any_work():
    from hybridnb import config
    from hybridnb.studies import recipe

    params = config.load_profile("ci")
    assert recipe.robustness_params(params) is None  # null: nothing else is read
    assert recipe.robustness_params({**params, "robustness_settings": {"length_groups": 1}}) is None  # its own: nothing
    assert recipe.robustness_params({**params, "robustness_settings": {"length_groups": 2}})["length_groups"] == 2
    for bad, words in (({"length_group": 2}, "length_group"), ({"alphas": [0.5]}, "not settings of a text run"),
                       ([("length_groups", 2)], "mapping")):
        with pytest.raises(ValueError, match=words):
            recipe.plan({**params, "robustness_settings": bad})
    with pytest.raises(ValueError, match="length_groups"):  # an invalid value: the run config refuses it
        recipe.plan({**params, "robustness_settings": {"length_groups": 0}})


def test_the_headline_reads_the_summary_only_and_carries_the_how_firm_paragraph():
    text = "\n".join(["# Report", "", "## Summary", "",
                      "- a → b: against X-Y, hybrid is no different beyond noise in any of the 10 columns.", "",
                      "**How firm** ([how firm the verdicts are](#how-firm-the-verdicts-are)): the grid was also "
                      "trained at `length_groups=1`.", "",
                      "## a → b", "", "| system | mono map |", "| --- | --- |", "| hybrid | 0.8 |", "",
                      "## How firm the verdicts are", "", "Summary at `length_groups=1`:", "",
                      "- a → b: against X-Y, hybrid is worse on cross map; no different beyond noise on the other 9.",
                      ""])
    block = report.headline(text)
    assert "hybrid is no different beyond noise in any" in block and "worse on cross map" not in block
    assert "[how firm the verdicts are](reports/REPORT.md#how-firm-the-verdicts-are)" in block


def test_the_notebooks_that_write_the_report_receive_robustness_settings():
    """make reproduce passes a notebook only the parameters it declares: notebooks 04 and 05 (both write REPORT.md)
    must declare robustness_settings, or the pipeline's report would lack the section that `report` writes."""
    from pathlib import Path

    from hybridnb import config, pipeline

    notebooks = Path(__file__).resolve().parents[1] / "notebooks"
    profile = config.load_profile("cpu")
    for name in ("04_compare", "05_ratio_sweep"):
        passed = pipeline.notebook_parameters(notebooks / f"{name}.ipynb", profile)
        assert passed["robustness_settings"] == profile["robustness_settings"], name
