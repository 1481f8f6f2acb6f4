"""reporting.git_commit: the commit stamp of generated reports."""

import shutil
import subprocess

import pytest

from hybridnb import paths, reporting

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")


def _git(root, *args):
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


@needs_git
def test_git_commit_is_dirty_for_code_but_not_for_regenerated_reports(tmp_path, monkeypatch):
    root = tmp_path / "repo"
    (root / "reports").mkdir(parents=True)
    (root / "code.py").write_text("x = 1\n")
    (root / "reports" / "REPORT.md").write_text("old\n")
    _git(root, "init", "-q")
    _git(root, "add", ".")
    _git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
    monkeypatch.setattr(paths, "repo_root", lambda: root)

    assert reporting.git_commit() == head
    (root / "reports" / "REPORT.md").write_text("regenerated\n")  # a run rewrote a committed report
    (root / "reports" / "new.md").write_text("untracked\n")
    assert reporting.git_commit() == head
    (root / "code.py").write_text("x = 2\n")  # the code that makes reports changed
    assert reporting.git_commit() == head + "+dirty"


def test_git_commit_outside_git_is_unknown(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "repo_root", lambda: tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert reporting.git_commit() == "unknown"


def test_format_ci_is_every_results_cell():
    """One cell format for every table of a results entry: the interval, the value alone, or n/a."""
    entry = {"value": 0.51234, "ci": [0.4, 0.6]}
    assert reporting.format_ci(entry) == "0.512 [0.400, 0.600]"
    assert reporting.format_ci(entry, 2, ci=False) == "0.51"
    assert reporting.format_ci({"value": 0.5, "ci": [None, None]}) == "0.500"
    assert reporting.format_ci(None) == reporting.format_ci({"value": None}) == reporting.format_ci({}) == "n/a"
