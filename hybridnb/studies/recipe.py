"""The recipe, chosen on held-out data, and every run of the report trained with it.

Three open choices of the text recipe are settled by probes, the way E5's temperature was: the candidate
input and its maximum length, the temperature, and the training budget. A probe is hybrid at the first seed;
it is scored on the **held-out validation pool** (the training set's validation items as a LAReQA pool,
:func:`hybridnb.studies.runs.prepare_data`), never on the evaluation sets, which would tune on the test set.

The held-out score (:func:`held_out_score`) is the mean of mono, cross and multi mAP on that pool: the three
settings the paper optimises together, with equal weight.

Order of work (every run reused by config hash when it is already in ``reports/runs/``):

1. inputs: hybrid, first seed, at each ``(candidate_mode, max_length)`` of ``recipe_inputs``, at the first
   temperature and the first budget; the best held-out score wins;
2. temperatures: at the chosen input, every other temperature of ``recipe_temperatures``; the best wins;
3. budget: at the chosen input and temperature, the budgets of ``recipe_steps`` in increasing order. A longer
   budget is taken when it raises the held-out score by at least ``recipe_min_gain`` over the budget taken so
   far; the first that does not stops the search (the stopping rule: a longer budget stops paying);
4. the grid: every strategy x every seed, training on ``train_data`` and evaluating on ``eval_data``, then the
   reverse direction (train on the evaluation set, evaluate on the training set), seed-major in each;
5. the ratio sweep: every point of ``alphas`` and ``mixtures`` at every seed (alpha 0 / 0.5 / 1 are the
   grid's cross, hybrid and mono runs, reused);
6. only when asked (stage ``masked``): the reverse direction's grid again with ``mask_false_negatives`` on, which
   tests whether that direction's verdicts come from its in-batch false negatives
   (:mod:`hybridnb.studies.batch_audit`).

The probes train on the path of ``recipe_length_groups`` (null: the profile's ``length_groups``): a faster path
that is the same function with other dropout masks (``length_groups`` > 1) does not re-open choices made at another
path, some of them near-ties, so a profile that moves its grid and sweeps to it keeps its committed probes.

The image-text ratio sweep has its own recipe and module (:mod:`hybridnb.studies.image_text_sweep`);
``python -m hybridnb recipe`` runs it first, since it is short and independent of the text recipe.

    python -m hybridnb recipe --profile cpu                  # train what is missing, in that order (hybridnb.cli)
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Any

from hybridnb import config
from hybridnb.studies import runs, sweep

__all__ = ["RecipeRun", "held_out_score", "input_probes", "temperature_probes", "budget_probes", "grid_runs",
           "masked_runs", "sweep_runs", "plan", "choose", "collect", "probe_name", "recipe_params", "input_label",
           "train", "zero_shot", "zero_shot_rows"]

#: the settings each stage chooses, in order
STAGES = ("input", "temperature", "budget")


@dataclass(frozen=True)
class RecipeRun:
    group: str                  # "input" | "temperature" | "budget" | "grid" | "reverse" | "masked" | "sweep"
    label: str                  # the system or point: hybrid, X-Y, alpha=0.25, sentence@128, ...
    seed: int
    params: dict[str, Any] = field(compare=False)

    @cached_property
    def cfg(self):
        return runs.check_run(self.params)


def held_out_score(results: dict[str, Any]) -> float:
    """Mean of mono, cross and multi mAP on the held-out validation pool (the recipe's criterion)."""
    pool = results.get(runs.VALIDATION_POOL)
    if pool is None:
        raise ValueError("this run has no held-out validation pool result (trained before the pool existed, "
                         "or on a training set that is not LAReQA)")
    return sum(pool[s]["map"]["value"] for s in ("mono", "cross", "multi")) / 3


def _seeds(params: dict[str, Any]) -> list[int]:
    return config.check_numbers("seeds", list(params.get("seeds") or [params["seed"]]),
                                "distinct non-negative integers")


def _inputs(params: dict[str, Any]) -> list[tuple[str, int]]:
    raw = params.get("recipe_inputs") or [[params["candidate_mode"], params["max_length"]]]
    out = []
    for entry in raw:
        if not isinstance(entry, (list, tuple)) or len(entry) != 2:
            raise ValueError(f"recipe_inputs entries are [candidate_mode, max_length], got {entry!r}")
        out.append((str(entry[0]), entry[1]))
    if len(set(out)) != len(out):
        raise ValueError(f"recipe_inputs has duplicates: {raw!r}")
    return out


def _numbers(params: dict[str, Any], key: str, fallback: str, number_type: type) -> list:
    values = config.check_numbers(key, list(params.get(key) or [params[fallback]]), "distinct positive numbers",
                                  positive=True, ints=False)
    return [number_type(v) for v in values]


def _probe_choices(params: dict[str, Any]) -> tuple[list[float], list[int]]:
    """The temperatures and budgets the probes try: ``recipe_temperatures`` and ``recipe_steps`` (null: the
    profile's ``temperature`` and ``steps``)."""
    return (_numbers(params, "recipe_temperatures", "temperature", float),
            _numbers(params, "recipe_steps", "steps", int))


def input_label(mode: str, max_length: int) -> str:
    return f"{mode}@{max_length}"


def probe_name(params: dict[str, Any]) -> str:
    """A probe's report folder: everything the probes vary is in the name, and a speed path's ``-lg<n>`` and a
    precision asked for by name (:func:`runs.path_tags`, as a run's name: ``recipe --set length_groups=4`` or
    ``train_dtype=float32`` probes beside the committed ones, not over them)."""
    mode = "sent" if params["candidate_mode"] == "sentence" else "sentctx"
    groups = runs.path_tags(params)
    return (f"{params.get('profile', 'custom')}-probe-hybrid-{mode}{params['max_length']}-"
            f"tau{params['temperature']:g}-{params['steps']}steps{groups}-{params['train_data']}-to-"
            f"{params['eval_data'] if isinstance(params['eval_data'], str) else '+'.join(params['eval_data'])}"
            f"-seed{params['seed']}")


def _probe(group: str, label: str, params: dict[str, Any], **overrides) -> RecipeRun:
    seed = _seeds(params)[0]
    groups = params.get("recipe_length_groups")
    if groups is not None:
        config.check_numbers("recipe_length_groups", groups, "null or an integer >= 1", positive=True, many=False)
    p = {**params, "strategy": "hybrid", "alpha": 0.5, "seed": seed,
         "length_groups": params.get("length_groups", 1) if groups is None else groups, **overrides}
    return RecipeRun(group, label, seed, {**p, "run_name": probe_name(p)})


def input_probes(params: dict[str, Any]) -> list[RecipeRun]:
    temperatures, budgets = _probe_choices(params)
    return [_probe("input", input_label(m, n), params, candidate_mode=m, max_length=n, temperature=temperatures[0],
                   steps=budgets[0]) for m, n in _inputs(params)]


def temperature_probes(params: dict[str, Any], mode: str, max_length: int) -> list[RecipeRun]:
    temperatures, budgets = _probe_choices(params)
    return [_probe("temperature", f"tau={t:g}", params, candidate_mode=mode, max_length=max_length,
                   temperature=t, steps=budgets[0]) for t in temperatures]


def budget_probes(params: dict[str, Any], mode: str, max_length: int, temperature: float) -> list[RecipeRun]:
    return [_probe("budget", f"{s} steps", params, candidate_mode=mode, max_length=max_length,
                   temperature=temperature, steps=s)
            for s in sorted(_probe_choices(params)[1])]


def recipe_params(params: dict[str, Any], chosen: dict[str, Any]) -> dict[str, Any]:
    """The profile with the chosen input, temperature and budget."""
    return {**params, "candidate_mode": chosen["candidate_mode"], "max_length": chosen["max_length"],
            "temperature": chosen["temperature"], "steps": chosen["steps"]}


def grid_runs(params: dict[str, Any]) -> list[RecipeRun]:
    """Every strategy x seed, seed-major, in the profile's direction and then the reverse one."""
    from hybridnb.studies.compare import system_label

    forward = [RecipeRun("grid", system_label(s), seed, {**params, "strategy": s, "seed": seed, "run_name": None})
               for seed in _seeds(params) for s in params["strategies"]]
    train, evaluated = params["train_data"], params["eval_data"]
    if not params.get("recipe_reverse", True):
        return forward
    if not isinstance(evaluated, str):
        raise ValueError("the reverse direction needs one eval_data (e.g. mlqa-r -> xquad-r)")
    reverse = [RecipeRun("reverse", r.label, r.seed, {**r.params, "train_data": evaluated, "eval_data": train})
               for r in forward]
    return forward + reverse


def masked_runs(params: dict[str, Any]) -> list[RecipeRun]:
    """The reverse direction's grid runs again with ``mask_false_negatives`` on (their names carry ``-fnmask``):
    every in-batch passage with the text of a query's own answer leaves that query's softmax. XQuAD-R asks
    several questions about one answer sentence, so its same-language batches hold such false negatives far
    more often than X-Y's; these runs say whether the reverse direction's verdicts survive without them. None
    without ``recipe_reverse`` (no reverse grid)."""
    return [RecipeRun("masked", r.label, r.seed, {**r.params, "mask_false_negatives": True})
            for r in grid_runs(params) if r.group == "reverse"]


def sweep_runs(params: dict[str, Any]) -> list[RecipeRun]:
    """Every sweep point (alphas, mixtures) at every seed, seed-major."""
    points = sweep.sweep_points(params) if (params.get("alphas") or params.get("mixtures")) else []
    return [RecipeRun("sweep", label, seed, {**p, "seed": seed}) for seed in _seeds(params) for label, p in points]


def robustness_settings(params: dict[str, Any]) -> dict[str, tuple[Any, Any]] | None:
    """The profile's ``robustness_settings`` as {key: (the profile's value, the other value)}, checked (keys of a text
    run), keeping only the keys whose value differs from the profile's; None when unset or when none differs
    (``--set length_groups=4`` on a profile whose robustness setting is 4: there is no other setting to read)."""
    settings = params.get("robustness_settings")
    if not settings:
        return None
    if not isinstance(settings, dict):
        raise ValueError(f"robustness_settings must be a mapping of run keys to values (e.g. {{length_groups: 1}}), "
                         f"got {settings!r}")
    config.check_parameter_names(settings, "robustness_settings")
    run_keys = {f.name for f in fields(config.TextRunConfig)}
    if set(settings) - run_keys:
        raise ValueError(f"robustness_settings: {sorted(set(settings) - run_keys)} are not settings of a text run "
                         "(python -m hybridnb train --help lists them)")
    pairs = {k: (params.get(k, config.HASHED_WHEN_SET.get(k)), v) for k, v in settings.items()}
    differ = {k: (here, there) for k, (here, there) in pairs.items() if here != there}
    return differ or None


def robustness_params(params: dict[str, Any]) -> dict[str, Any] | None:
    """The profile at its :func:`robustness_settings` (None when there is none to read)."""
    settings = robustness_settings(params)
    return None if settings is None else {**params, **{k: there for k, (_, there) in settings.items()}}


def plan(params: dict[str, Any]) -> list:
    """Every run config the recipe can imply, checked before any work: every probe any choice could lead to
    (inputs x temperatures x budgets), and the grid and the sweep at the profile's own recipe. Two different
    configs that would share a report folder are refused here, and so are ``robustness_settings`` that name an
    unknown key, a key that is not a text run's or an invalid run (the report reads the grid there; nothing trains it)."""
    temps, steps = _probe_choices(params)
    planned = [_probe("input", input_label(m, n), params, candidate_mode=m, max_length=n, temperature=t,
                      steps=s).cfg for m, n in _inputs(params) for t in temps for s in steps]
    planned += [r.cfg for r in grid_runs(params) + sweep_runs(params) + masked_runs(params)]
    names: dict[str, str] = {}
    for cfg in planned:
        if names.setdefault(cfg.run_name, cfg.hash) != cfg.hash:
            raise ValueError(f"two different recipe runs would share the report folder {cfg.run_name}")
    other = robustness_params(params)  # the report reads the grid there too (nothing trains): valid configs, own folders
    for cfg in [] if other is None else [r.cfg for r in grid_runs(other) + masked_runs(other)]:
        if names.get(cfg.run_name, cfg.hash) != cfg.hash:
            raise ValueError(f"robustness_settings: its run {cfg.run_name} would share a report folder with a "
                             "different run of the recipe")
    return planned


def choose(stage: str, done: list[dict[str, Any]], min_gain: float = 0.0) -> dict[str, Any]:
    """The chosen probe of a stage from its finished probes (``{"run", "results", "dir", "score"}``).

    input and temperature: the highest held-out score (ties: the first listed). budget: in increasing steps,
    the longer budget while it gains at least ``min_gain`` over the one taken so far.
    """
    if not done:
        raise ValueError(f"no finished probe for the {stage} stage")
    if stage != "budget":
        return max(done, key=lambda d: d["score"])  # max keeps the first of equal scores
    taken = done[0]
    for longer in done[1:]:
        if longer["score"] - taken["score"] < min_gain:
            break
        taken = longer
    return taken


def collect(params: dict[str, Any], train_missing: bool = True, show_progress: bool = True,
            stages: tuple[str, ...] = ("probes", "grid", "sweep")) -> dict[str, Any]:
    """Every recipe run in order, trained now where missing (``train_missing``) or only the finished ones.

    Returns {"probes": {stage: [...]}, "chosen": {candidate_mode, max_length, temperature, steps} or a partial
    dict, "grid": [...], "reverse": [...], "sweep": [...], "masked": [...]}, each entry {"run", "results", "dir",
    "score"}; ``stages`` may add ``"masked"`` (:func:`masked_runs`, after the sweep).
    A stage whose probes are not all finished leaves the later ones empty (nothing is chosen on part of them).
    """
    min_gain = float(params.get("recipe_min_gain", 0.0))
    plan(params)  # every run checked before the first one trains

    def execute(planned: list[RecipeRun]) -> list[dict[str, Any]]:
        return train(planned, show_progress, compute=train_missing)

    done: dict[str, Any] = {"probes": {}, "chosen": {}, "grid": [], "reverse": [], "sweep": [], "masked": []}
    if "probes" not in stages:
        return done
    planned_inputs = input_probes(params)
    probes = execute(planned_inputs)
    done["probes"]["input"] = probes
    if len(probes) < len(planned_inputs):
        return done
    best = choose("input", probes)["run"].params
    done["chosen"].update(candidate_mode=best["candidate_mode"], max_length=best["max_length"])
    planned = temperature_probes(params, best["candidate_mode"], best["max_length"])
    probes = execute(planned)
    done["probes"]["temperature"] = probes
    if len(probes) < len(planned):
        return done
    done["chosen"]["temperature"] = choose("temperature", probes)["run"].params["temperature"]
    planned = budget_probes(params, best["candidate_mode"], best["max_length"], done["chosen"]["temperature"])
    probes, decided = [], True
    for r in planned:  # in increasing steps: a longer budget is trained only while the previous one paid
        finished = execute([r])
        if not finished:
            decided = False  # not trained yet (train_missing=False): no budget is chosen on part of the probes
            break
        probes += finished
        if choose("budget", probes, min_gain) is not probes[-1]:
            break  # this longer budget did not pay: the search stops
    done["probes"]["budget"] = probes
    done["chosen"]["steps"] = choose("budget", probes, min_gain)["run"].params["steps"] if decided else None
    if done["chosen"]["steps"] is None:
        return done
    chosen = recipe_params(params, done["chosen"])
    if "grid" in stages:
        grid = execute(grid_runs(chosen))
        done["grid"] = [g for g in grid if g["run"].group == "grid"]
        done["reverse"] = [g for g in grid if g["run"].group == "reverse"]
    if "sweep" in stages:
        done["sweep"] = execute(sweep_runs(chosen))
    if "masked" in stages:
        done["masked"] = execute(masked_runs(chosen))
    return done


def train(planned: list[RecipeRun], show_progress: bool = True, compute: bool = True) -> list[dict[str, Any]]:
    """Each planned run in order, reused by config hash or trained now (``compute``; otherwise a run not finished
    is left out): [{"run", "dir", "results", "score"}], the score on the held-out pool where the run has one."""
    out = []
    for r in planned:
        found = runs.find_finished_dir(r.cfg)
        if found is None and compute:
            print(f"[hybridnb] recipe: training {r.cfg.run_name} ({r.group}, {r.label}) ...", flush=True)
            found = (runs.run_in_child_process if r.params.get("isolate_runs") else runs.run)(
                r.params, show_progress=show_progress)
        elif found is None:
            continue
        score = held_out_score(found[1]) if runs.VALIDATION_POOL in found[1] else None
        out.append({"run": r, "dir": found[0], "results": found[1], "score": score})
    return out


def zero_shot(params: dict[str, Any], mode: str, compute: bool = True, show_progress: bool = True):
    """The zero-shot row of the profile's model in candidate ``mode`` on the profile's ``eval_datasets``:
    {"results", "dir"}, or None when it is neither saved nor ``compute``-d.

    A saved result with the same model, encoding settings, queries, candidates and bootstrap is reused from
    any profile's folder (the same computation, e.g. the cpu profile's notebook 02); otherwise it is
    computed into ``reports/<profile>/zero_shot/<model>[--<mode>]/``.
    """
    from hybridnb.studies import backbone_study, zero_shot as zs
    from hybridnb.models import backbones
    from hybridnb.data import lareqa
    from hybridnb.paths import reports_root

    config.check_candidate_mode(mode)
    # every dataset of the profile, as notebook 02 evaluates them: the folder is 02's for the profile's own
    # mode, and a result of fewer datasets written there would replace 02's (and not match it next time)
    tasks = {name: lareqa.load_task(name, opts["languages"], opts["max_ids"])
             for name, opts in config.check_eval_datasets(params["eval_datasets"]).items()}
    record = zs.model_record(params["model"], params["max_length"], mode, params["encode_dtype"])
    own = zs.result_dir(params["profile"], params["model"])
    own = own if mode == params["candidate_mode"] else own.with_name(f"{own.name}--{mode.replace('+', '-')}")
    candidates = [own] + sorted(p for p in reports_root().glob(f"*/zero_shot/{own.name}") if p != own)
    for folder in candidates:
        saved = zs.find(folder, record, tasks, params["n_resamples"], params["seed"], params["encode_dtype"])
        if saved is not None:
            return {"results": saved, "dir": folder}
    if not compute:
        return None
    backbone = backbones.get_backbone(params["model"]).name  # the registry entry of the profile's model
    results = backbone_study.zero_shot_results(backbone, tasks, {**params, "candidate_mode": mode},
                                               show_progress=show_progress, out=own)
    return {"results": results, "dir": own}


def zero_shot_rows(params: dict[str, Any], compute: bool = True, show_progress: bool = True) -> dict[str, dict]:
    """{dataset: {label: {"results", "dir"}}}: the untrained model in the recipe's input ("zero-shot") and in
    the other candidate mode at the same length ("zero-shot (<mode>@<length>)"), each on every evaluation set
    of the profile; a row neither saved nor ``compute``-d is left out."""
    out: dict[str, dict] = {}
    for mode in config.CANDIDATE_MODES:
        row = zero_shot(params, mode, compute=compute, show_progress=show_progress)
        if row is None:
            continue
        label = "zero-shot" if mode == params["candidate_mode"] else \
            f"zero-shot ({input_label(mode, params['max_length'])})"  # no ", ": REPORT.md's sentences list names
        for dataset in row["results"]["datasets"]:
            out.setdefault(dataset, {})[label] = row
    return {d: dict(sorted(rows.items(), key=lambda kv: kv[0] != "zero-shot")) for d, rows in out.items()}
