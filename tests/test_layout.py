"""The package's shape and the committed results' identity.

- Folders by role: no private name is imported from another folder, and the folders import each other in
  one direction only (data -> evaluation -> models -> training -> integrations -> image_text -> studies ->
  pipeline/cli): the run skeleton (training.run_folder) sits below both, image_text is a modality library
  that plugs into it, and the studies compose runs of either.
- Every run committed under reports/runs/ keeps its config hash: its saved config, checked again by
  today's code, and the run the profile plans today (the recipe: probes, grid, sweeps; image-text) hash
  to what is on disk, so `make reproduce` / `make sweep` reuse them instead of retraining.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "hybridnb"
#: import order of the role folders: a folder may import only from folders before it (and the top level's
#: foundation modules, which import no folder except data.sources for the dataset languages)
FOLDERS = ("data", "evaluation", "models", "training", "integrations", "image_text", "studies")
FOUNDATION = ("paths", "allocator", "child_processes", "config", "reporting", "file_hashes")
ORCHESTRATION = ("pipeline", "cli", "__main__")


def _imports(path: Path):
    """(imported module under hybridnb, imported names) for every ``from hybridnb... import`` in the file."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "hybridnb":
            yield node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "hybridnb":
                    yield a.name, []


def _folder(module: str) -> str:
    """'hybridnb.training.sampling' -> 'training'; top-level modules -> their own name."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _files():
    return sorted(p for p in PACKAGE.rglob("*.py"))


def _source_folder(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def test_every_module_lives_in_a_role_folder():
    top = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert top == sorted(("__init__",) + FOUNDATION + ORCHESTRATION)
    assert sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__") == sorted(FOLDERS)
    for folder in FOLDERS:
        assert (PACKAGE / folder / "__init__.py").is_file()


def test_no_private_name_crosses_a_folder():
    crossings = []
    for path in _files():
        here = _source_folder(path)
        for module, names in _imports(path):
            there = _folder(module) if module.count(".") else ""
            if module.count(".") == 1 and there not in FOLDERS:
                there = module.split(".")[1]  # a top-level module
            private = [n for n in names if n.startswith("_")]
            if private and there != here:
                crossings.append(f"{path.relative_to(ROOT)}: {module} {private}")
    assert not crossings, crossings


def _rank(name: str) -> int:
    if name in FOUNDATION or name == "__init__":
        return -1
    if name in FOLDERS:
        return FOLDERS.index(name)
    assert name in ORCHESTRATION, name
    return len(FOLDERS)


def test_folders_import_in_one_direction():
    backwards = []
    for path in _files():
        here = _source_folder(path)
        for module, names in _imports(path):
            parts = module.split(".")
            if len(parts) == 1:  # from hybridnb import x, y: each name is a folder or a top-level module
                targets = names
            else:
                targets = [parts[1]]
            for there in targets:
                if there == here or there == "__version__":
                    continue
                if here in FOUNDATION:
                    ok = there in FOUNDATION or module == "hybridnb.data.sources"
                elif here in ORCHESTRATION:
                    ok = True  # the top: pipeline, cli and __main__ may use everything, each other included
                else:
                    ok = _rank(there) < _rank(here) or (_rank(there) == -1)
                if not ok:
                    backwards.append(f"{path.relative_to(ROOT)} ({here}) imports {module} {names}")
    assert not backwards, backwards


def test_the_package_imports_without_cycles():
    """Import every module as the first hybridnb module of the interpreter: a cycle shows up as an ImportError.

    One interpreter for all of them (the hybridnb modules are dropped from ``sys.modules`` before each), so
    torch and the other libraries load once."""
    import subprocess
    import sys

    modules = sorted({".".join(("hybridnb",) + p.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")
                      for p in _files() if p.name != "__main__.py"})
    script = ("import importlib, sys, traceback\n"
              "for m in sys.argv[1:]:\n"
              "    for k in [k for k in sys.modules if k == 'hybridnb' or k.startswith('hybridnb.')]:\n"
              "        del sys.modules[k]\n"
              "    try:\n"
              "        importlib.import_module(m)\n"
              "    except Exception:\n"
              "        print(f'import {m}:', traceback.format_exc()[-800:])\n"
              "        sys.exit(1)\n")
    done = subprocess.run([sys.executable, "-c", script, *modules], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-1500:] + done.stderr[-800:]


# ---- the committed runs keep their hashes ------------------------------------------------------------


def _committed_configs():
    return sorted((ROOT / "reports" / "runs").glob("*/config.json"))


def test_committed_runs_exist():
    assert len(_committed_configs()) >= 10


@pytest.mark.parametrize("path", _committed_configs(), ids=lambda p: p.parent.name)
def test_saved_config_rehashes_to_itself(path):
    """The saved config, checked again by today's code, gives the saved hash (text and image-text runs)."""
    from hybridnb.image_text import runs as image_text_runs
    from hybridnb.studies import runs

    saved = json.loads(path.read_text(encoding="utf-8"))
    if "-mm-" in path.parent.name:  # image-text: its keys are the profile's mm_ keys
        shared = image_text_runs.SHARED
        zero_shot = "zero-shot" in path.parent.name
        params = {(k if k in shared else f"mm_{k}"): v for k, v in saved.items()
                  if k not in ("hash", "run_name", "provenance", "encode_batch_size")}
        cfg = image_text_runs.check_run(params, saved.get("strategy"), zero_shot=zero_shot)
    elif saved.get("trainer") == "sentence-transformers":  # notebook 08's runs: hybridnb's config + the trainer
        from hybridnb.studies import st_compare

        cfg = st_compare.st_run_config({**saved, "profile": saved["provenance"]["profile"]})
        assert cfg.text.hash == saved["hybridnb_hash"] and cfg.run_name == saved["run_name"]
    else:
        cfg = runs.check_run({**saved, "run_name": saved["run_name"]})
    assert cfg.hash == saved["hash"]


def _planned(profile_name: str, overrides: dict | None = None):
    """Every run config the profile's notebooks plan today (with ``overrides``: what ``recipe --set`` plans):
    (run name, hash)."""
    from hybridnb import config
    from hybridnb.image_text import runs as image_text_runs
    from hybridnb.studies import image_text_sweep, recipe, st_compare

    profile = {**config.load_profile(profile_name), **(overrides or {})}
    planned = recipe.plan(profile) + image_text_runs.check_runs(profile) + image_text_sweep.plan(profile) + \
        st_compare.plan(profile)  # make st-compare's sentence-transformers runs
    return {cfg.run_name: cfg.hash for cfg in planned}


@pytest.mark.parametrize("profile_name", ["cpu"])
def test_profiles_plan_the_committed_runs(profile_name, monkeypatch):
    """`make reproduce` / `make sweep` / `make probes` / `make st-compare` find every committed run of the profile
    by its hash, on a CPU like the one that trained them: a profile's `auto` precision resolves to bf16 where the
    CPU has it natively (the committed image-text runs: an AVX512_BF16 Zen 4) and to float32 elsewhere, where
    make reproduce retrains those runs (test_auto_train_dtype_is_resolved_before_the_hash)."""
    from hybridnb.models import precision

    monkeypatch.setattr(precision, "native_bf16", lambda device=None: True)
    planned = _planned(profile_name)
    saved = {p.parent.name: json.loads(p.read_text(encoding="utf-8")) for p in _committed_configs()}
    committed = {name: c["hash"] for name, c in saved.items() if c["provenance"]["profile"] == profile_name}
    assert committed, f"no committed {profile_name} run"
    # runs remade at a speed path's setting for a default flip (`recipe --set length_groups=4`, issue #38): the
    # profile plans them at that setting, and they must be found there by their hash as the others are
    from hybridnb import config

    own = config.load_profile(profile_name).get("length_groups", 1)
    for groups in sorted({saved[name].get("length_groups", 1) for name in committed} - {own}):
        planned.update(_planned(profile_name, {"length_groups": groups}))
    # runs asked for in a named precision (`train_dtype=float32`: benchmarks/grid_at_setting.py compares them with
    # the bf16 runs) carry it in their names, so the profile plans them there beside its own, never over them
    from hybridnb.studies import runs

    named = {saved[n]["train_dtype"] for n in committed if f"-{runs.PRECISION_TAGS.get(saved[n].get('train_dtype'))}-" in n}
    for dtype in sorted(named):
        for name, digest in _planned(profile_name, {"train_dtype": dtype, "encode_dtype": dtype}).items():
            planned.setdefault(name, digest)
    for name, saved_hash in committed.items():
        assert name in planned, f"{name} is committed but the {profile_name} profile no longer plans it"
        assert planned[name] == saved_hash, f"{name}: the profile now hashes to {planned[name]}, saved {saved_hash}"


def test_committed_reports_hold_no_machine_path():
    """results.json, reports and executed notebooks under reports/ name files relative to the project."""
    found = []
    for path in sorted((ROOT / "reports").rglob("*")):
        if path.suffix in (".json", ".md", ".ipynb", ".csv", ".jsonl"):
            text = path.read_text(encoding="utf-8", errors="replace")
            found += [f"{path.relative_to(ROOT)}: {root}" for root in ("/work/", "/root/", "/home/", "/tmp/", "/Users/")
                      if root in text]
    assert not found, found[:10]


def _module_name(path: Path) -> str:
    return ".".join(("hybridnb",) + path.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")


def test_no_module_import_cycle_even_through_function_local_imports():
    """A cycle hidden by an import inside a function (``studies.compare -> miracl_eval -> backbone_study ->
    compare`` once was) still ties the modules together: every import statement counts, wherever it is."""
    modules = {_module_name(p): p for p in _files()}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for module, names in _imports(path):
            for target in [f"{module}.{n}" for n in names] or [module]:
                target = target if target in modules else module
                if target in modules and target != name and not name.startswith(target + "."):  # not its package
                    targets.add(target)
        graph[name] = targets
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, [" -> ".join(c) for c in cycles]
