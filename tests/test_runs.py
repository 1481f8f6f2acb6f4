"""hybridnb.studies.runs and the `python -m hybridnb train` CLI: up-front checks, hashing, reuse, atomic reports."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import REAL_MIRROR
from hybridnb import config, cli, paths
from hybridnb.studies import runs
from hybridnb.data.train_data import DataLeakError
from tiny_models import save_tiny_bert, synthetic_table


def ci_params(**change):
    params = config.load_profile("ci")
    params.update(change)
    return params


def test_ci_and_cpu_profiles_make_valid_runs():
    for name in ("ci", "cpu"):
        cfg = runs.check_run(config.load_profile(name))
        assert cfg.eval_data == ["xquad-r"] and cfg.train_data == "mlqa-r"
        t = config.load_profile(name)["temperature"]
        tau = "" if t == 0.05 else f"-tau{t:g}"  # a temperature other than the default is in the name
        tau += "-fp32" if config.load_profile(name)["train_dtype"] == "float32" else ""  # ci asks for float32 by name
        assert cfg.run_name == f"{name}-hybrid{tau}-mlqa-r-to-xquad-r-seed0"
    paper = runs.check_run(config.load_profile("paper"))
    assert paper.eval_data == ["xquad-r", "mlqa-r"] and paper.batch_size == 100 and paper.lr == 3e-5


@pytest.mark.parametrize("change, message", [
    (dict(strategy="bilingual"), "unknown batch kind|unknown strategy"),
    (dict(alpha=-0.1), "alpha"),
    (dict(strategy={"mono": 0.5, "cross": 0.6}), "sum to 1"),
    (dict(strategy={"mono": -1.0, "cross": 2.0}), "negative"),
    (dict(train_data="squad"), "unknown train_data"),
    (dict(train_languages=["en", "el"]), "not in the data"),
    (dict(eval_data="mlqa-r", train_data="mlqa-r"), "zero-shot"),
    (dict(eval_data="tydi"), r"eval_data must be a list of values from 'xquad-r', 'mlqa-r', got \['tydi'\]"),
    (dict(eval_data=[]), "at least one"),
    (dict(encode_dtype="int4"), "encode_dtype"),
    (dict(val_fraction=1.0), "val_fraction"),
    (dict(train_dtype="fp8"), "train_dtype"),
    (dict(steps=0), "steps"),
    (dict(max_length=100000), "exceeds the 512 positions"),   # once: a tensor-size error at the first step
    (dict(max_length=0), "max_length must be an int >= 2"),
    (dict(encode_batch_size=0), "encode_batch_size"),         # once: an error after all the training
])
def test_bad_run_parameters_fail_before_any_work(change, message):
    with pytest.raises(ValueError, match=message):
        runs.check_run(ci_params(**change))


def test_config_hash_follows_the_result_defining_keys_only():
    a = runs.check_run(ci_params())
    assert runs.check_run(ci_params()).hash == a.hash
    assert runs.check_run(ci_params(lr=1e-4)).hash != a.hash
    assert runs.check_run(ci_params(strategy="mono")).hash != a.hash
    assert runs.check_run(ci_params(run_name="x", encode_batch_size=7)).hash == a.hash
    # options of datasets that are not evaluated do not matter
    other = ci_params()
    other["eval_datasets"] = {**other["eval_datasets"], "mlqa-r": {"languages": ["en"], "max_ids": 3}}
    assert runs.check_run(other).hash == a.hash
    assert runs.check_run(ci_params(alpha=0.25)).run_name == "ci-hybrid0.25-fp32-mlqa-r-to-xquad-r-seed0"
    mix = runs.check_run(ci_params(strategy={"mono": 0.5, "mixed": 0.5}))
    assert mix.run_name.startswith("ci-mix-mixed0.5-mono0.5-")
    # a key that came after the committed runs changes the hash (and the name) only when set
    assert runs.check_run(ci_params(mask_false_negatives=False)).hash == a.hash
    masked = runs.check_run(ci_params(mask_false_negatives=True))
    assert masked.hash != a.hash and masked.run_name == "ci-hybrid-fnmask-fp32-mlqa-r-to-xquad-r-seed0"
    assert masked.training().mask_false_negatives and "mask_false_negatives" not in a.training().stored()


def test_cli_overrides_are_parsed_as_yaml():
    assert cli.parse_overrides(["steps=10", "gradcache=true", "train_languages=[en, de]", "run_name=null"]) == {
        "steps": 10, "gradcache": True, "train_languages": ["en", "de"], "run_name": None}
    assert cli.parse_overrides(["lr=3e-5", "alpha=.5", "run_name=1e5x"]) == {"lr": 3e-5, "alpha": 0.5,
                                                                          "run_name": "1e5x"}
    with pytest.raises(SystemExit, match=r"--set train_languages: cannot read '\[en, de' as a YAML value"):
        cli.parse_overrides(["train_languages=[en, de"])
    with pytest.raises(SystemExit):
        cli.parse_overrides(["steps"])


@pytest.fixture()
def tiny_run(tmp_path, monkeypatch):
    if REAL_MIRROR is None:
        pytest.skip("no raw-data mirror")
    monkeypatch.setenv("HYBRIDNB_REPORTS", str(tmp_path / "reports"))
    monkeypatch.setenv("HYBRIDNB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HYBRIDNB_MIRROR", str(REAL_MIRROR))
    model = save_tiny_bert(tmp_path / "bert")
    table_path = tmp_path / "table.json"
    synthetic_table(languages=("en", "de")).save(table_path)
    params = ci_params(model=str(model), train_data=str(table_path), train_languages=None, steps=4,
                       batch_size=4, val_every=2, val_fraction=0.25, n_resamples=20, max_length=32,
                       eval_datasets={"xquad-r": {"languages": ["en", "de"], "max_ids": 10}})
    return tmp_path, params


def test_run_writes_a_complete_report_and_reuses_it(tiny_run, one_thread):
    tmp_path, params = tiny_run
    report_dir, results = runs.run(params, show_progress=False)
    assert report_dir == tmp_path / "reports" / "runs" / "ci-bert-hybrid-fp32-table-to-xquad-r-seed0"
    names = {p.name for p in report_dir.iterdir()}
    assert names == {"config.json", "results.json", "results.md", "train_log.jsonl", "loss_curve.png",
                     "per_query_xquad-r.npz", "manifest.json"}
    assert results["kind"] == "trained" and results["training"]["best_step"] in (2, 4)
    best = paths.resolve_shown(results["model"]["best_dir"])  # the sentence-transformers folder (recorded relative)
    assert (tmp_path / "cache" / "runs") in Path(best).parents and "steps: 4" in (Path(best) / "README.md").read_text()
    block = results["datasets"]["xquad-r"]
    assert block["n_queries"] == 20 and 0 <= block["mono"]["map"]["value"] <= 1
    assert json.loads((report_dir / "config.json").read_text())["hash"] == results["training"]["config_hash"]
    assert not list(report_dir.parent.glob(".*partial"))
    weights = Path(best).parent  # the resume checkpoint is pruned once the report is written; both encoders stay
    assert not (weights / "checkpoint.pt").exists() and (weights / "best").is_dir() and (weights / "final").is_dir()

    mtime = (report_dir / "results.json").stat().st_mtime_ns
    again_dir, again = runs.run(params, show_progress=False)  # same config: reused, nothing retrained
    assert again == results and (again_dir / "results.json").stat().st_mtime_ns == mtime


def test_training_data_with_evaluation_text_is_refused_before_training(tiny_run):
    from hybridnb.data import lareqa

    tmp_path, params = tiny_run
    task = lareqa.load_task("xquad-r", ["en", "de"], 10)
    leaky = synthetic_table(languages=("en", "de"))
    for i, question in enumerate(task.questions.select_columns(["text"])[:]["text"][:5]):
        leaky.queries["en"][i] = question  # 5 of 40 items: far more than noise
    leaky.save(tmp_path / "leaky.json")
    with pytest.raises(DataLeakError, match="overlaps the evaluation data"):
        runs.run({**params, "train_data": str(tmp_path / "leaky.json")}, show_progress=False)
    assert not list((tmp_path / "reports" / "runs").rglob("*"))  # checked writable, nothing written
    assert [p.name for p in (tmp_path / "cache" / "runs").rglob("*")] == [".ci-bert-hybrid-fp32-leaky-to-xquad-r-seed0.lock"]


def test_cli_refuses_an_unknown_key_with_a_hint():
    params = config.load_profile("ci")
    with pytest.raises(SystemExit, match=r"--set: unknown parameter\(s\) 'stepz' \(did you mean 'steps'"):
        cli.check_override_keys({"stepz": 3})
    with pytest.raises(SystemExit, match="'alhpa'.*'alpha'"):
        cli.train_main(["--profile", "ci", "--set", "alhpa=0.25"])
    cli.check_override_keys({"steps": 3, "run_name": "x"})  # known keys pass
    assert set(params) <= set(config.PARAMETERS)


class _FakeTask:
    """A run kind for the skeleton: counts its calls, optionally fails while evaluating."""

    def __init__(self, fail: bool = False):
        self.cfg = runs.check_run(ci_params()).replace(run_name="fake-run", hash="0123456789ab")
        self.calls, self.fail = [], fail

    def dirs(self):
        from hybridnb.paths import reports_root

        return runs.run_dirs(self.cfg)[0], reports_root() / "_weights" / self.cfg.run_name

    def prepare(self):
        self.calls.append("prepare")
        return {"items": 3}

    def prune(self, trained):
        self.calls.append("prune")

    def train(self, data, show_progress):
        self.calls.append("train")
        return None

    def evaluate(self, data, trained, started, show_progress):
        self.calls.append("evaluate")
        if self.fail:
            raise RuntimeError("evaluation failed")
        from hybridnb import reporting

        results = {"kind": "fake", "items": data["items"], "value": float("nan"),
                   "provenance": reporting.provenance("test")}
        return runs.RunOutput(results, {"extra.txt": lambda path: path.write_text("x")}, {},
                              "A fake run.", [{"column": 1}])


def test_the_run_skeleton_writes_once_reuses_by_hash_and_never_leaves_half_a_report(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HYBRIDNB_REPORTS", str(tmp_path))
    failing = _FakeTask(fail=True)
    with pytest.raises(RuntimeError, match="evaluation failed"):
        runs.execute(failing, announce=True)
    assert failing.calls == ["prepare", "train", "evaluate"] and not any((tmp_path / "runs").glob("*"))
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith((".partial", ".old", ".tmp"))]
    assert "fake-run (config 0123456789ab): training" in capsys.readouterr().out

    task = _FakeTask()
    report_dir, results = runs.execute(task, show_progress=False)
    assert task.calls == ["prepare", "train", "evaluate", "prune"]  # the checkpoint goes once the report is written
    assert report_dir == tmp_path / "runs" / "fake-run"
    assert {p.name for p in report_dir.iterdir()} == {"config.json", "results.json", "results.md", "extra.txt",
                                                        "manifest.json"}
    assert results["items"] == 3 and results["value"] is None  # read back from results.json, as a reuse gives it
    assert json.loads((report_dir / "config.json").read_text())["hash"] == "0123456789ab"
    assert "A fake run." in (report_dir / "results.md").read_text()

    again = _FakeTask()
    assert runs.execute(again, announce=True) == (report_dir, results) and again.calls == []  # nothing redone
    assert "reusing the finished run" in capsys.readouterr().out
    changed = _FakeTask()
    changed.cfg = changed.cfg.replace(hash="ba9876543210")
    monkeypatch.setenv(runs.REPLACE_ENV, "1")  # another config under the same name: only when asked
    runs.execute(changed, show_progress=False)
    assert changed.calls == ["prepare", "train", "evaluate", "prune"]  # run again, report replaced


def test_a_changed_config_never_silently_replaces_the_report_under_its_name(tmp_path, monkeypatch):
    monkeypatch.setenv("HYBRIDNB_REPORTS", str(tmp_path))
    monkeypatch.delenv(runs.REPLACE_ENV, raising=False)
    first = _FakeTask()
    first.cfg = first.cfg.replace(lr=1e-5)
    report_dir, _ = runs.execute(first, show_progress=False)
    other = _FakeTask()
    other.cfg = other.cfg.replace(lr=5e-5, hash="ffffffffffff")
    with pytest.raises(ValueError, match=r"another config .*differ in: lr\).*run_name.*HYBRIDNB_REPLACE_RUNS=1"):
        runs.execute(other, show_progress=False)
    assert other.calls == [] and json.loads((report_dir / "config.json").read_text())["lr"] == 1e-5
    monkeypatch.setenv(runs.REPLACE_ENV, "1")
    runs.execute(other, show_progress=False)
    assert json.loads((report_dir / "config.json").read_text())["lr"] == 5e-5


def test_cli_errors_are_one_line_and_the_traceback_needs_debug(capsys):
    assert cli.main(["train", "--profile", "ci", "--set", "max_length=0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["hybridnb train: error: max_length must be an int >= 2, got 0 (--debug shows the traceback)"]
    with pytest.raises(ValueError, match="max_length"):
        cli.main(["train", "--profile", "ci", "--set", "max_length=0", "--debug"])


def test_a_second_process_on_the_same_run_stops_at_once(tmp_path, monkeypatch):
    """Two identical runs started together once crashed one another (one fixed temp folder, a log with every
    step twice): the run holds a lock on its name, and the second stops before preparing anything."""
    from hybridnb.training import checkpoints

    monkeypatch.setenv("HYBRIDNB_REPORTS", str(tmp_path))
    task = _FakeTask()
    lock = task.dirs()[1].parent / ".fake-run.lock"
    with checkpoints.run_lock(lock):  # another process's lock: flock conflicts across open files
        with pytest.raises(checkpoints.RunLocked, match=rf"already running \(pid {os.getpid()} .*wait for it"):
            runs.execute(task, show_progress=False)
    assert task.calls == []
    runs.execute(task, show_progress=False)  # released: the run goes ahead
    assert task.calls[-1] == "prune"


def test_an_unwritable_output_folder_fails_before_any_work(tmp_path, monkeypatch):
    blocker = tmp_path / "reports"
    blocker.write_text("a file where the reports folder should be")  # unwritable even for root
    monkeypatch.setenv("HYBRIDNB_REPORTS", str(blocker))
    task = _FakeTask()
    with pytest.raises(PermissionError, match=r"cannot write to .*reports.*HYBRIDNB_REPORTS"):
        runs.execute(task, show_progress=False)
    assert task.calls == []


def test_keep_checkpoints_env_skips_the_pruning(tmp_path, monkeypatch):
    monkeypatch.setenv("HYBRIDNB_REPORTS", str(tmp_path))
    monkeypatch.setenv(runs.KEEP_CHECKPOINTS_ENV, "1")
    task = _FakeTask()
    runs.execute(task, show_progress=False)
    assert task.calls == ["prepare", "train", "evaluate"]


def test_the_default_run_name_carries_the_model_unless_it_is_the_profiles_offline_e5():
    """Two models with one strategy never meet in one report folder; the committed runs keep their names."""
    cfg = {"train_data": "mlqa-r", "eval_data": ["xquad-r"], "temperature": 0.05, "strategy": "hybrid",
           "alpha": 0.5, "seed": 1}
    assert runs.default_run_name("cpu", {**cfg, "model": runs.OFFLINE_MODEL}) == "cpu-hybrid-mlqa-r-to-xquad-r-seed1"
    assert runs.default_run_name("cpu", {**cfg, "model": "intfloat/multilingual-e5-base"}) == \
        "cpu-multilingual-e5-base-hybrid-mlqa-r-to-xquad-r-seed1"
    assert runs.default_run_name("cpu", {**cfg, "model": "/data/models/LaBSE/"}) == "cpu-labse-hybrid-mlqa-r-to-xquad-r-seed1"


def test_the_default_run_name_carries_a_precision_asked_for_by_name_not_auto(monkeypatch):
    """`auto` keeps the committed runs' names on every machine; a run asked for in float32 (compared against the
    committed bf16 runs: benchmarks/grid_at_setting.py) gets its own folder, never theirs, and so do its probes."""
    from hybridnb.models import precision
    from hybridnb.studies import recipe

    base = {**config.load_profile("cpu"), "strategy": "hybrid", "seed": 1, "run_name": None}
    monkeypatch.setattr(precision, "native_bf16", lambda device=None: False)  # auto is float32 here: no tag
    assert runs.check_run(base).run_name == "cpu-hybrid-tau0.01-mlqa-r-to-xquad-r-seed1"
    asked = runs.check_run({**base, "train_dtype": "float32", "encode_dtype": "float32"})
    assert asked.run_name == "cpu-hybrid-tau0.01-fp32-mlqa-r-to-xquad-r-seed1" and asked.train_dtype == "float32"
    assert runs.check_run({**base, "train_dtype": "float32", "length_groups": 4}).run_name == \
        "cpu-hybrid-tau0.01-lg4-fp32-mlqa-r-to-xquad-r-seed1"
    # bf16 by name: the committed runs' precision, their names (a saved config checked again keeps its name)
    assert runs.check_run({**base, "train_dtype": "bfloat16"}).run_name == "cpu-hybrid-tau0.01-mlqa-r-to-xquad-r-seed1"
    assert recipe.probe_name({**base, "train_dtype": "float32"}).startswith("cpu-probe-hybrid-sent128-tau0.01-120steps-fp32-")
    assert "-fp32" not in recipe.probe_name(base)


def test_a_run_in_its_own_process_gives_the_numbers_of_a_run_in_this_one(tiny_run, one_thread, monkeypatch, capfd):
    """``isolate_runs`` (the cpu profile's memory budget) must not change a number: the same run trained here
    and in a spawned child, into two report folders, has the same training log, per-query results and metrics.
    An error in the child comes back as itself; a child that dies without a word names the run. A child asked
    for no progress prints no progress bar (transformers' weight-loading and shard-writing bars included)."""
    import numpy as np

    tmp_path, params = tiny_run
    here_dir, here = runs.run(params, show_progress=False)
    monkeypatch.setenv("HYBRIDNB_REPORTS", str(tmp_path / "child-reports"))
    monkeypatch.setenv("HYBRIDNB_CACHE", str(tmp_path / "child-cache"))  # its own weights: nothing reused
    capfd.readouterr()  # this process's own output so far is not the child's
    child_dir, child = runs.run_in_child_process(params, show_progress=False)
    assert "%|" not in capfd.readouterr().err  # no tqdm bar from the child
    assert child_dir == tmp_path / "child-reports" / "runs" / here_dir.name
    assert child["provenance"]["hardware"]["torch_threads"] == 1  # this process's threads, not the machine's
    steps = lambda d: [{k: v for k, v in json.loads(line).items() if k not in ("pairs_per_s", "step_s")}  # noqa: E731
                       for line in (d / "train_log.jsonl").read_text().splitlines()]
    assert steps(child_dir) == steps(here_dir)
    assert child["datasets"] == here["datasets"] and child["training"] == here["training"]
    with np.load(here_dir / "per_query_xquad-r.npz") as a, np.load(child_dir / "per_query_xquad-r.npz") as b:
        assert a.files == b.files and [k for k in a.files if not np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f")] == []

    with pytest.raises(ValueError, match="max_length"):  # checked in the child, raised here as itself
        runs.run_in_child_process({**params, "max_length": 0, "seed": 1}, show_progress=False)
    monkeypatch.setattr(runs, "_run_in_child", _die_at_once)
    with pytest.raises(RuntimeError, match=r"run .*seed2 ended without a result: its process exited with code -9 \(killed by signal 9"):
        runs.run_in_child_process({**params, "seed": 2}, show_progress=False)


def _die_at_once(params, show_progress, threads, send):
    os.kill(os.getpid(), 9)
