"""The reproduction matrix (hybridnb.studies.matrix): every committed result of the cpu comparison is listed
with the command that remakes it, and agrees with the values the matrix expects."""

from __future__ import annotations

import copy

import pytest

from hybridnb import config
from hybridnb.paths import repo_root
from hybridnb.studies import matrix


@pytest.fixture
def committed(monkeypatch):
    """The matrix and the committed reports/ (read only: the tests elsewhere write to their own reports)."""
    monkeypatch.setenv("HYBRIDNB_REPORTS", str(repo_root() / "reports"))
    return matrix.load(), config.load_profile("cpu")


def test_every_committed_result_agrees_with_the_matrix(committed):
    table, params = committed
    assert matrix.check(table, params) == []
    ids = {c["id"] for c in table["conditions"]}
    assert {"text/mlqa-r-to-xquad-r/hybrid", "text/xquad-r-to-mlqa-r/X-Y", "zero-shot/sentence@128",
            "text/xquad-r-to-mlqa-r-fnmask/hybrid"} <= ids  # the masked reverse grid too
    masked = next(c for c in table["conditions"] if c["id"] == "text/xquad-r-to-mlqa-r-fnmask/X-Y")
    assert all(e["command"].endswith("mask_false_negatives=true") for e in masked["seeds"])
    assert all(len(c["seeds"]) == 3 for c in table["conditions"] if "seeds" in c)  # 3 seeds per system, both ways


def test_a_moved_number_a_wrong_command_and_an_unlisted_run_are_named(committed):
    table, params = committed
    changed = copy.deepcopy(table)
    text = [c for c in changed["conditions"] if "seeds" in c]
    text[0]["seeds"][0]["expected"]["xquad-r"]["mono_map"] += 0.001
    text[1]["seeds"][1]["command"] = text[1]["seeds"][1]["command"].replace("seed=1", "seed=2")
    dropped = text[2]["seeds"].pop()
    problems = matrix.check(changed, params)
    assert len(problems) == 3, problems
    assert "mono_map" in problems[0] and "the matrix expects" in problems[0]
    assert "plans config" in problems[1] and "not the committed run's" in problems[1]
    assert dropped["config_hash"] in problems[2] and "is not in the matrix" in problems[2]


def test_the_docs_page_is_generated_from_the_matrix(committed):
    table, _ = committed
    assert (repo_root() / matrix.DOCS).read_text(encoding="utf-8") == matrix.docs_markdown(table)


def test_another_machine_gets_three_seed_sds_or_the_floor():
    runs = [{"d": {"mono_map": v, "cross_map": 0.7, "multi_map": 0.6, "rank_distance": r}}
            for v, r in ((0.80, 300.0), (0.81, 310.0), (0.82, 320.0))]
    spread = matrix._spread(runs, "d")
    assert spread["mono_map"] == {"mean": 0.81, "tolerance": 0.03}  # 3 x sd 0.01
    assert spread["cross_map"]["tolerance"] == matrix.FLOORS["cross_map"]  # no spread: the floor
    assert spread["rank_distance"] == {"mean": 310.0, "tolerance": 30.0}


def test_the_sentence_transformers_runs_are_listed_with_the_command_that_makes_them(committed):
    """Notebook 08's runs (hybrid by SentenceTransformerTrainer, every seed): listed once committed, their command
    plans them, and a command that does not (another notebook) or a dropped seed is named."""
    table, params = committed
    st = [c for c in table["conditions"] if c["id"].startswith("st/")]
    if not st:  # before notebook 08's cpu runs are committed the matrix has no such condition, and needs none
        assert not any(found for _, found in matrix._st_runs(params))
        pytest.skip("no committed sentence-transformers run")
    (condition,) = st
    assert [e["seed"] for e in condition["seeds"]] == params["seeds"]
    changed = copy.deepcopy(table)
    (mine,) = [c for c in changed["conditions"] if c["id"].startswith("st/")]
    mine["seeds"][0]["command"] = mine["seeds"][0]["command"].replace("08_sentence_transformers", "03_train")
    dropped = mine["seeds"].pop()
    problems = matrix.check(changed, params)
    assert len(problems) == 2, problems
    assert "does not make the committed run" in problems[0]
    assert dropped["st_config_hash"] in problems[1] and "is not in the matrix" in problems[1]
