"""Profiles and notebooks agree: notebook defaults are the ci profile; every profile passes the checks."""

import json
from pathlib import Path

import papermill
import pytest
import yaml

from hybridnb import config

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_defaults_are_the_ci_profile(notebook):
    ci = yaml.safe_load((ROOT / "params" / "ci.yaml").read_text())
    declared = papermill.inspect_notebook(str(notebook))
    assert declared, f"{notebook.name} has no cell tagged 'parameters'"
    for name, spec in declared.items():
        assert name in ci, f"{notebook.name}: parameter {name!r} missing from params/ci.yaml"
        assert eval(spec["default"]) == ci[name], f"{notebook.name}: default of {name!r} differs from ci.yaml"


@pytest.mark.parametrize("profile", ["ci", "cpu", "paper"])
def test_profiles_pass_the_up_front_checks(profile):
    params = config.load_profile(profile)
    assert params["profile"] == profile
    config.check_eval_datasets(params["eval_datasets"])
    config.check_candidate_mode(params["candidate_mode"])
    config.check_encode_dtype(params["encode_dtype"])
    for nb in NOTEBOOKS:  # every notebook parameter has a value in every profile
        missing = set(papermill.inspect_notebook(str(nb))) - set(params)
        assert not missing, f"profile {profile} lacks {sorted(missing)} for {nb.name}"


@pytest.mark.parametrize("bad, message", [
    ({"squad": {}}, "unknown dataset"),
    ({"xquad-r": {"languages": ["en", "fr"]}}, "not in the data"),
    ({"mlqa-r": {"languages": ["el"]}}, "not in the data"),
    ({"xquad-r": {"max_ids": 0}}, "max_ids"),
    ({"xquad-r": {"maxids": 3}}, "unknown option"),
    ({}, "non-empty"),
])
def test_bad_eval_datasets_are_rejected_with_a_clear_message(bad, message):
    with pytest.raises(ValueError, match=message):
        config.check_eval_datasets(bad)


def test_unknown_profile_and_candidate_mode():
    with pytest.raises(FileNotFoundError, match="unknown profile"):
        config.load_profile("nonexistent")
    with pytest.raises(ValueError, match="candidate_mode"):
        config.check_candidate_mode("paragraph")
    with pytest.raises(ValueError, match="encode_dtype 'int4'; choose one of"):
        config.check_encode_dtype("int4")


def test_pipeline_rejects_bad_profile_before_running_anything(tmp_path, monkeypatch):
    from hybridnb import pipeline

    bad = tmp_path / "bad.yaml"
    bad.write_text("profile: bad\neval_datasets: {xquad-r: {languages: [xx]}}\n")
    monkeypatch.setenv("HYBRIDNB_REPORTS", str(tmp_path / "reports"))
    with pytest.raises(ValueError, match="not in the data"):
        pipeline.run(str(bad))
    assert not (tmp_path / "reports").exists()


def test_pipeline_runs_the_report_last_and_checks_every_run_first(tmp_path, monkeypatch):
    from hybridnb import pipeline

    profile = config.load_profile("ci")
    plan = pipeline.jobs(profile, pipeline.NOTEBOOKS)
    assert [name for _, name, _ in plan] == ["01_data.ipynb", "02_zero_shot.ipynb", "06_backbones.ipynb",
                                             "07_multimodal.ipynb", "04_compare.ipynb"]
    one_run = pipeline.jobs(profile, ("03_train.ipynb",))  # 03 once per strategy when it is asked for
    assert [name for _, name, _ in one_run] == ["03_train-mono.ipynb", "03_train-cross.ipynb", "03_train-hybrid.ipynb"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**profile, "profile": "bad", "strategies": ["mono", "bilingual"]}))
    monkeypatch.setenv("HYBRIDNB_REPORTS", str(tmp_path / "reports"))
    with pytest.raises(ValueError, match="bilingual"):
        pipeline.run(str(bad))
    assert not (tmp_path / "reports").exists()


# ---- one list of parameters: a misspelled key fails before any work ----------------------------------


def test_every_profile_and_notebook_parameter_is_registered_and_every_registered_one_is_used():
    used = set()
    for notebook in NOTEBOOKS:
        declared = set(papermill.inspect_notebook(str(notebook)))
        assert declared <= set(config.PARAMETERS), (notebook.name, declared - set(config.PARAMETERS))
        used |= declared
    for path in sorted((ROOT / "params").glob("*.yaml")):
        keys = set(yaml.safe_load(path.read_text()))
        assert keys <= set(config.PARAMETERS), (path.name, keys - set(config.PARAMETERS))
        used |= keys
    assert set(config.PARAMETERS) == used, f"registered but used nowhere: {set(config.PARAMETERS) - used}"
    assert all(help_text.strip() for help_text in config.PARAMETERS.values())


def test_a_misspelled_profile_key_is_refused_with_a_hint(tmp_path):
    profile = yaml.safe_load((ROOT / "params" / "ci.yaml").read_text())
    profile["stpes"] = profile.pop("steps")
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump(profile))
    with pytest.raises(ValueError, match=r"typo.yaml: unknown parameter\(s\) 'stpes' \(did you mean 'steps'"):
        config.load_profile(tmp_path / "typo.yaml")


def test_notebook_parameter_check_ignores_the_kernel_and_refuses_a_typo():
    import math

    namespace = {"steps": 3, "alpha": 0.5, "In": [], "Out": {}, "_i1": "", "get_ipython": print, "math": math,
                 "__builtins__": {}}
    config.check_notebook_parameters(namespace)
    with pytest.raises(ValueError, match="'stepz' \\(did you mean 'steps'"):
        config.check_notebook_parameters({**namespace, "stepz": 3})


def test_papermill_refuses_a_misspelled_parameter_before_any_work(tmp_path):
    """`papermill notebooks/03_train.ipynb out.ipynb -p stepz 3`: the first cell after the parameters fails."""
    with pytest.raises(papermill.PapermillExecutionError, match="stepz.*did you mean 'steps'"):
        papermill.execute_notebook(str(ROOT / "notebooks" / "03_train.ipynb"), str(tmp_path / "out.ipynb"),
                                   parameters={"stepz": 3}, cwd=str(ROOT / "notebooks"), progress_bar=False,
                                   kernel_name="python3")
    assert not (tmp_path / "reports").exists()


# ---- notebooks as a story: no stored result, no machine path -------------------------------------------


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_keep_only_the_outputs_nbval_checks_and_no_machine_path(notebook):
    """A notebook under notebooks/ holds no output a reader could take for a result: only the cells that
    pytest --nbval checks keep theirs, and those say they are the ci profile's. No absolute path of a machine."""
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        source = "".join(cell["source"])
        if cell.get("outputs"):
            assert "NBVAL_CHECK_OUTPUT" in source, (notebook.name, source[:80])
            assert "ci profile" in source, (notebook.name, source[:80])
    text = json.dumps(nb)
    for root in ("/work/", "/root/", "/home/", "/tmp/", "/Users/"):
        assert root not in text, (notebook.name, root)
