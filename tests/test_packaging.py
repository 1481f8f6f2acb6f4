"""The two install paths (pip via pyproject.toml, conda via environment.yml) must not drift apart."""

import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    return {Requirement(r).name.lower(): str(Requirement(r).specifier) for r in reqs}


def _environment_requirements() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    reqs = [Requirement(r) for r in pip_section if not r.startswith("-e")]
    return {r.name.lower(): str(r.specifier) for r in reqs}


def test_environment_yml_lists_the_same_packages_as_pyproject():
    assert _environment_requirements() == _pyproject_requirements()


def test_torch_is_pinned_to_the_cpu_build_version():
    # a looser torch spec makes pip pull a multi-GB CUDA build on this project's machines
    assert _pyproject_requirements()["torch"] == "==2.13.0"


def test_make_lab_opens_jupyterlab_from_the_project_environment():
    """The README's first use is JupyterLab: `make lab` runs the venv's own jupyter (installed, with
    ipywidgets for widget progress bars), not whatever is on PATH."""
    import importlib.util
    import shutil
    import subprocess
    import sys

    if shutil.which("make") is None:
        import pytest

        pytest.skip("make is not installed")
    bin_dir = Path(sys.executable).parent
    dry = subprocess.run(["make", "-n", "lab", f"VENV={bin_dir.parent}"], cwd=ROOT, capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr
    assert f"{bin_dir}/jupyter lab --notebook-dir=notebooks" in dry.stdout
    assert (bin_dir / "jupyter-lab").exists() and importlib.util.find_spec("ipywidgets") is not None
