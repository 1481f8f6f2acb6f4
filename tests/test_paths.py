"""hybridnb.paths: the HYBRIDNB_FRESH_SINCE cutoff that `make reproduce FRESH=1` sets."""

import json
import time

import pytest

from hybridnb import config, file_hashes, paths
from hybridnb.studies import runs


def test_fresh_cutoff(tmp_path, monkeypatch):
    f = tmp_path / "results.json"
    f.write_text("{}")
    monkeypatch.delenv("HYBRIDNB_FRESH_SINCE", raising=False)
    assert paths.fresh_since() is None and paths.reusable(f)
    monkeypatch.setenv("HYBRIDNB_FRESH_SINCE", repr(time.time() + 60))
    assert not paths.reusable(f)
    monkeypatch.setenv("HYBRIDNB_FRESH_SINCE", "0")
    assert paths.reusable(f)
    monkeypatch.setenv("HYBRIDNB_FRESH_SINCE", "yesterday")
    with pytest.raises(ValueError, match="Unix time"):
        paths.fresh_since()


def test_find_finished_honours_the_cutoff(tmp_path, monkeypatch):
    monkeypatch.setenv("HYBRIDNB_REPORTS", str(tmp_path))
    monkeypatch.delenv("HYBRIDNB_FRESH_SINCE", raising=False)
    cfg = runs.check_run(config.load_profile("ci")).replace(run_name="cpu-mono-x", hash="abc")
    report_dir, _ = runs.run_dirs(cfg)
    report_dir.mkdir(parents=True)
    (report_dir / "config.json").write_text(json.dumps({"hash": "abc"}))
    (report_dir / "results.json").write_text(json.dumps({"kind": "trained"}))
    file_hashes.write_manifest(report_dir)
    assert runs.find_finished(cfg) == {"kind": "trained"}
    assert runs.find_finished(cfg.replace(hash="other")) is None
    monkeypatch.setenv("HYBRIDNB_FRESH_SINCE", repr(time.time() + 60))
    assert runs.find_finished(cfg) is None


def test_shown_paths_are_relative_to_the_checkout_or_the_reports_parent(tmp_path, monkeypatch):
    root = paths.repo_root()
    assert paths.shown(root / "reports" / "cpu" / "REPORT.md") == "reports/cpu/REPORT.md"
    monkeypatch.setenv("HYBRIDNB_REPORTS", str(tmp_path / "out" / "reports"))
    assert paths.shown(tmp_path / "out" / "reports" / "ci" / "REPORT.md") == "reports/ci/REPORT.md"
    elsewhere = tmp_path.parent / "elsewhere.txt"
    assert paths.shown(elsewhere) == str(elsewhere.resolve())


def test_an_executed_notebook_shows_one_parameter_cell_and_relative_paths(tmp_path):
    import nbformat

    from hybridnb import pipeline

    nb = nbformat.v4.new_notebook()
    defaults = nbformat.v4.new_code_cell("steps = 6", metadata={"tags": ["parameters"]})
    injected = nbformat.v4.new_code_cell("steps = 60", metadata={"tags": ["injected-parameters"]})
    nb.cells = [defaults, injected, nbformat.v4.new_code_cell("print(steps)")]
    root = paths.repo_root()
    nb.metadata["papermill"] = {"input_path": str(root / "notebooks" / "03_train.ipynb"), "output_path": "x"}
    executed = tmp_path / ".03.partial.ipynb"
    nbformat.write(nb, str(executed))
    pipeline.tidy_executed(executed, root / "notebooks" / "03_train.ipynb", root / "reports" / "cpu" / "03.ipynb")
    tidy = nbformat.read(str(executed), as_version=4)
    assert tidy.cells[0].metadata.jupyter.source_hidden is True and "jupyter" not in tidy.cells[1].metadata
    assert [c.source for c in tidy.cells] == ["steps = 6", "steps = 60", "print(steps)"]  # nothing dropped
    assert tidy.metadata.papermill.input_path == "notebooks/03_train.ipynb"
    assert tidy.metadata.papermill.output_path == "reports/cpu/03.ipynb"
