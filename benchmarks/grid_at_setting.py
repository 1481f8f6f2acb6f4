"""The recipe's grid at another setting against the committed grid: does the setting change any system's numbers?

A speed path that is not bit-identical (``length_groups`` 4: other dropout masks, other bf16 rounding) may become
the default only where it "holds the tolerance" (issue #38). The fast-path benchmark checks the validation curve
of one run per seed (reports/benchmarks/fast_paths.md); this checks what a reader of REPORT.md sees: each system's
evaluation numbers. For every direction of the grid and every trained system, its runs at the new setting minus
its runs at the profile's (only the seeds finished at both), every column of the report, with the report's verdict
rule (:func:`hybridnb.studies.report.setting_effect`: a seed-aware 95% interval over seeds and questions;
"?" marks one seed); then hybrid against every baseline at both settings, REPORT.md's verdicts and summary sentences,
with the columns whose verdict differs (what the flip would change in the report). Beside it, what each run
cost: steps' seconds, wall seconds and peak RSS, as recorded by
the runs themselves (not a speed measurement: runs of different sessions ran on different machines, some beside
other work; the ``made`` columns say when each ran).

Nothing is trained here: the runs at the new setting come from ``python -m hybridnb recipe --profile cpu
--stages probes grid --set length_groups=4`` (or any trainer of the same configs: found by config hash), committed
under reports/runs/. A setting with runs for some systems only (float32 training: hybrid's) compares those.

    python benchmarks/grid_at_setting.py --profile cpu --set length_groups=4 --out reports/benchmarks/length_groups_grid
    # float32 against the committed bf16 runs; the runs: python -m hybridnb train --profile cpu --strategy hybrid
    #   --seed K --set train_dtype=float32 encode_dtype=float32 run_name=cpu-hybrid-tau0.01-fp32-mlqa-r-to-xquad-r-seedK
    python benchmarks/grid_at_setting.py --profile cpu --set train_dtype=float32 encode_dtype=float32 \
        --out reports/benchmarks/train_precision
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hybridnb import reporting  # noqa: E402
from hybridnb.cli import profile_with_overrides  # noqa: E402
from hybridnb.config import load_profile  # noqa: E402
from hybridnb.studies import recipe, report  # noqa: E402


def cost_rows(before: list[dict], after: list[dict]) -> list[dict]:
    rows = []
    for b, a in zip(before, after):
        tb, ta = b["results"]["timings"], a["results"]["timings"]
        rows.append({"system": b["run"].label, "seed": b["run"].seed,
                     "steps s (before)": round(tb["train_s"]), "steps s (after)": round(ta["train_s"]),
                     "wall s (before)": round(tb["wall_s"]), "wall s (after)": round(ta["wall_s"]),
                     "peak RSS GB (before)": round(tb["peak_rss_mb"] / 1024, 1),
                     "peak RSS GB (after)": round(ta["peak_rss_mb"] / 1024, 1),
                     "made (before)": b["results"]["provenance"]["created"][:16],
                     "made (after)": a["results"]["provenance"]["created"][:16]})
    return rows


def compare(params: dict, changed: dict) -> dict:
    n, seed = params["n_resamples"], params["seed"]
    finished = lambda p: recipe.train(recipe.grid_runs(p), compute=False)  # noqa: E731  (nothing trains here)
    before_all, after_all = finished(params), finished(changed)
    zero_shots = recipe.zero_shot_rows(params, compute=False, show_progress=False)  # the untrained model: both sides
    out = {}
    for group, train, evaluated in (("grid", params["train_data"], params["eval_data"]),
                                    ("reverse", params["eval_data"], params["train_data"])):
        before, after = report.paired([e for e in before_all if e["run"].group == group],
                               [e for e in after_all if e["run"].group == group])
        if not after:
            continue
        where = f"{train} → {evaluated}"
        sections = [report.direction_section(report.by_label(entries, report.SYSTEMS), evaluated, n, seed,
                                             zero_shots.get(evaluated, {})) for entries in (before, after)]
        effect = None if None in sections else report.setting_effect(sections[0], sections[1], n, seed)
        summaries = [[] if sec is None else report.summary_lines(where, sec["verdicts"]) for sec in sections]
        out[where] = {"effect": effect, "costs": cost_rows(before, after), "runs": len(after),
                      "summary_before": summaries[0], "summary_after": summaries[1],
                      "verdict_changes": [] if None in sections else report.verdict_changes(*sections)}
    return out


def render(doc: dict, parts: dict, setting: str) -> str:
    lines = [f"# The grid at {setting} against the committed grid", "", reporting.stamp(doc["provenance"]), "",
             f"Each system's runs at `{setting}` minus its runs at the profile's setting (`{doc['before']}`), the "
             "seeds finished at both; every column of REPORT.md with its verdict rule (a 95% interval over seeds "
             "and questions; \"win\": the new setting is better; \"?\": one seed, no claim). Made by "
             f"`{doc['command']}`.", ""]
    for where, part in parts.items():
        lines += [f"## {where} ({part['runs']} run(s) at each setting)", ""]
        effect = part["effect"]
        if effect is None:
            lines += ["No trained system has runs at both settings yet.", ""]
        else:
            moved = effect[~effect.verdict.str.rstrip("?").eq("no difference")]
            lines += [f"Columns where a system moved beyond noise: {len(moved)} of {len(effect)}"
                      + (f" ({', '.join(f'{r.baseline} {r.column} {r.verdict}' for r in moved.itertuples())})"
                         if len(moved) else "") + ".", "",
                      *report.effect_lines(effect, f"{setting} against {doc['before']}")]
        changes = part["verdict_changes"]
        lines += ["What a reader of REPORT.md would see change: hybrid against every baseline, the verdicts at both "
                  f"settings: {len(changes)} column(s) differ" + (":" if changes else "."), ""]
        if changes:
            lines += [reporting.markdown_table(changes), ""]
        lines += [f"Summary at {doc['before']}:", "", *[f"- {x}" for x in part["summary_before"]], "",
                  f"Summary at {setting}:", "", *[f"- {x}" for x in part["summary_after"]], ""]
        costs = part["costs"]
        mean = lambda k: statistics.mean(r[k] for r in costs)  # noqa: E731
        lines += [f"What each run cost, as each run recorded it (mean steps {mean('steps s (before)'):.0f} s before, "
                  f"{mean('steps s (after)'):.0f} s after; wall {mean('wall s (before)'):.0f} s before, "
                  f"{mean('wall s (after)'):.0f} s after). Not a speed measurement: runs made in different sessions "
                  "ran on "
                  "different machines (the CPU model, its clock and the VM's neighbours change between sessions) and "
                  "some beside other work; the side-by-side speed of the paths is reports/benchmarks/fast_paths.md. "
                  "Peak RSS is the whole process's: a process that trained several runs reports its largest so far.",
                  "", reporting.markdown_table(costs), ""]
    return "\n".join(lines)


def before_setting(params: dict, keys: list[str]) -> str:
    """The compared keys at the profile's setting, as its finished runs hold them: ``auto`` precision is shown as
    what made them (``train_dtype=bfloat16``), since a run of the other precision may stand in for it."""
    cfgs = [e["run"].cfg for e in recipe.train(recipe.grid_runs(params), compute=False)]
    values = {k: sorted({str(getattr(c, k, params.get(k))) for c in cfgs}) or [str(params.get(k))] for k in keys}
    return ", ".join(f"{k}={'/'.join(v)}" for k, v in values.items())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="cpu")
    p.add_argument("--set", nargs="+", required=True, metavar="KEY=VALUE", help="the setting compared, e.g. "
                   "length_groups=4")
    p.add_argument("--out", default="reports/benchmarks/length_groups_grid", help="writes OUT.md and OUT.json")
    args = p.parse_args(argv)
    params, changed = load_profile(args.profile), profile_with_overrides(args.profile, args.set)
    keys = sorted({s.split("=", 1)[0] for s in args.set})
    setting = ", ".join(args.set)
    parts = compare(params, changed)
    doc = {"benchmark": "the grid at another setting", "setting": setting, "before": before_setting(params, keys),
           "command": f"python benchmarks/grid_at_setting.py --profile {args.profile} --set {' '.join(args.set)}",
           "provenance": reporting.provenance(args.profile),
           "parts": {where: {"runs": part["runs"], "costs": part["costs"],
                             "verdict_changes": part["verdict_changes"], "summary_before": part["summary_before"],
                             "summary_after": part["summary_after"],
                             "effect": None if part["effect"] is None else part["effect"].to_dict("records")}
                     for where, part in parts.items()}}
    out = Path(args.out)
    reporting.write_json(out.with_suffix(".json"), doc)
    reporting.write_text(out.with_suffix(".md"), render(doc, parts, setting))
    print(f"wrote {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
