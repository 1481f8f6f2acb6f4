"""Tests for hybridnb.data.sources: the pinned raw-file table and fetch().

Most tests use a tiny synthetic dataset ("toy") registered for the test, so they run anywhere; the ones
that need the real raw files use the mirror ($HYBRIDNB_MIRROR or /work/shared/data) and skip without it.
"""

from __future__ import annotations

import hashlib
import io
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from hybridnb.data import sources
from hybridnb.data.sources import ChecksumError, DownloadError, RawFile


from conftest import REAL_MIRROR, needs_mirror  # noqa: E402


def _files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


# ------------------------------------------------------------------------------------------------
# The pinned table
# ------------------------------------------------------------------------------------------------


def _parse_manifest(text: str):
    """(sha256 rows {path: (bytes, sha256)}, sources {folder: (owner/repo, commit)})."""
    rows = {}
    for m in re.finditer(r"^\|\s*(\S+)\s*\|\s*(\d+)\s*\|\s*([0-9a-f]{64})\s*\|\s*$", text, re.M):
        assert m.group(1) not in rows, f"duplicate manifest row {m.group(1)}"
        rows[m.group(1)] = (int(m.group(2)), m.group(3))
    srcs = {}
    for m in re.finditer(r"^\|\s*(\S+)\s*\|\s*github\.com/(\S+/\S+) @ ([0-9a-f]{40})", text, re.M):
        srcs[m.group(1)] = (m.group(2), m.group(3))
    return rows, srcs


@needs_mirror
def test_pinned_table_matches_manifest():
    rows, srcs = _parse_manifest((REAL_MIRROR / "MANIFEST.md").read_text(encoding="utf-8"))
    assert len(rows) == 50
    pinned = {rf.path: (rf.size, rf.sha256) for rf in sources.RAW_FILES.values()}
    assert pinned == rows
    # each dataset's URLs point at the repository and commit the manifest names for its folder
    assert {src.folder for src in sources.DATASETS.values()} == set(srcs)
    for rf in sources.RAW_FILES.values():
        repo, commit = srcs[sources.DATASETS[rf.dataset].folder]
        assert rf.url.startswith(f"https://raw.githubusercontent.com/{repo}/{commit}/"), rf


def test_canonical_urls():
    gh = "https://raw.githubusercontent.com"
    f = sources.RAW_FILES
    assert f["lareqa/xquad-r/en.json"].url == (
        f"{gh}/google-research-datasets/lareqa/9bc8c7fb6dd8d01d72a05a93c2cb96882b0d299c/xquad-r/en.json")
    assert f["lareqa/mlqa-r/LICENSE"].url == (
        f"{gh}/google-research-datasets/lareqa/354d67d1cd066854cdfbf5ad0e6105528976141d/mlqa-r/LICENSE")
    assert f["multi30k/task1/raw/val.en.gz"].url == (
        f"{gh}/multi30k/dataset/a3d2e0d26b56f3846f66a952536ffed4e401d05a/data/task1/raw/val.en.gz")
    # the repository's top-level README is not under data/
    assert f["multi30k/README.md"].url == (
        f"{gh}/multi30k/dataset/a3d2e0d26b56f3846f66a952536ffed4e401d05a/README.md")
    assert f["xtd10/STAIR/test_1kcaptions_jp.txt"].url == (
        f"{gh}/adobe-research/Cross-lingual-Test-Dataset-XTD10/d77ff16148468c84287f3efcbf602a015c5e4954/"
        "STAIR/test_1kcaptions_jp.txt")


def test_languages_and_shared_files():
    assert sources.dataset_languages("xquad-r") == sources.XQUAD_R_LANGUAGES
    assert sources.dataset_languages("mlqa-r") == sources.MLQA_R_LANGUAGES
    assert sources.dataset_languages("multi30k") == ("cs", "de", "en", "fr")
    assert sources.dataset_languages("xtd10") == (
        "de", "en", "es", "fr", "it", "jp", "ko", "pl", "ru", "tr", "zh")
    shared = {name: sorted(f.path for f in sources.dataset_files(name) if f.lang is None)
              for name in sources.DATASETS}
    assert shared["xquad-r"] == ["lareqa/xquad-r/LICENSE"]
    assert shared["mlqa-r"] == ["lareqa/mlqa-r/LICENSE"]
    assert "xtd10/XTD10/test_image_names.txt" in shared["xtd10"]
    assert "multi30k/task1/image_splits/val.txt" in shared["multi30k"]


# ------------------------------------------------------------------------------------------------
# fetch() on a synthetic dataset
# ------------------------------------------------------------------------------------------------

TOY_CONTENT = {
    "toy/LICENSE": b"toy licence\n",
    "toy/en.json": b'{"hello": "world"}\n',
    "toy/de.json": b'{"hallo": "welt"}\n',
}


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """Register dataset "toy" (3 files), a mirror holding it, and an empty cache; returns (mirror, cache)."""
    mirror, cache = tmp_path / "mirror", tmp_path / "cache"
    monkeypatch.setitem(sources.DATASETS, "toy",
                        sources._Source("toy", "example/toy", "0" * 40, ""))
    for path, data in TOY_CONTENT.items():
        lang = None if path.endswith("LICENSE") else Path(path).stem
        url = f"https://raw.githubusercontent.com/example/toy/{'0' * 40}/{path[4:]}"
        monkeypatch.setitem(sources.RAW_FILES, path,
                            RawFile("toy", path, url, len(data), hashlib.sha256(data).hexdigest(), lang))
        (mirror / path).parent.mkdir(parents=True, exist_ok=True)
        (mirror / path).write_bytes(data)
    monkeypatch.setenv("HYBRIDNB_MIRROR", str(mirror))
    monkeypatch.setenv("HYBRIDNB_CACHE", str(cache))
    return mirror, cache


def test_fetch_copies_and_verifies(toy):
    mirror, cache = toy
    folder = sources.fetch("toy")
    assert folder == cache / "raw" / "toy"
    assert _files_under(cache) == ["raw/toy/LICENSE", "raw/toy/de.json", "raw/toy/en.json"]
    for path, data in TOY_CONTENT.items():
        assert (cache / "raw" / path).read_bytes() == data


def test_fetch_selected_languages_plus_shared_files(toy):
    _, cache = toy
    sources.fetch("toy", ["en"])
    assert _files_under(cache) == ["raw/toy/LICENSE", "raw/toy/en.json"]


def test_cached_files_are_reverified(toy):
    mirror, cache = toy
    sources.fetch("toy", ["en"])
    # a good cached file is used as is: the mirror copy is no longer needed
    (mirror / "toy/en.json").unlink()
    sources.fetch("toy", ["en"])
    # a corrupted cached file is fetched again
    (mirror / "toy/en.json").write_bytes(TOY_CONTENT["toy/en.json"])
    (cache / "raw/toy/en.json").write_bytes(b"tampered\n")
    sources.fetch("toy", ["en"])
    assert (cache / "raw/toy/en.json").read_bytes() == TOY_CONTENT["toy/en.json"]


def test_checksum_mismatch_keeps_no_bad_file(toy):
    mirror, cache = toy
    bad = bytearray(TOY_CONTENT["toy/en.json"])
    bad[3] ^= 0x01  # one byte changed, same size
    (mirror / "toy/en.json").write_bytes(bytes(bad))
    expected = sources.RAW_FILES["toy/en.json"].sha256
    actual = hashlib.sha256(bytes(bad)).hexdigest()
    with pytest.raises(ChecksumError) as exc:
        sources.fetch("toy", ["en"])
    assert isinstance(exc.value, ValueError)
    msg = str(exc.value)
    assert "toy/en.json" in msg and expected in msg and actual in msg
    # only verified files remain (the good LICENSE); no temp file, no bad file
    assert _files_under(cache) == ["raw/toy/LICENSE"]


def test_checksum_mismatch_when_only_file_leaves_cache_empty(toy):
    mirror, cache = toy
    (mirror / "toy/LICENSE").write_bytes(b"toy licencE\n")
    with pytest.raises(ChecksumError, match="toy/LICENSE"):
        sources.fetch("toy", ["en"])
    assert _files_under(cache) == []


def test_bad_cached_file_is_removed_even_if_refetch_fails(toy):
    mirror, cache = toy
    sources.fetch("toy", ["en"])
    (cache / "raw/toy/en.json").write_bytes(b"tampered\n")
    (mirror / "toy/en.json").write_bytes(b"also bad\n")
    with pytest.raises(ChecksumError):
        sources.fetch("toy", ["en"])
    assert _files_under(cache) == ["raw/toy/LICENSE"]


def test_missing_mirror_file(toy):
    mirror, cache = toy
    (mirror / "toy/de.json").unlink()
    with pytest.raises(FileNotFoundError) as exc:
        sources.fetch("toy")
    assert "toy/de.json" in str(exc.value) and "HYBRIDNB_MIRROR" in str(exc.value)
    assert _files_under(cache) == []  # nothing copied before the check
    sources.fetch("toy", ["en"])  # a file set that the mirror does hold still works


def test_mirror_not_a_folder(toy, tmp_path, monkeypatch):
    monkeypatch.setenv("HYBRIDNB_MIRROR", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="HYBRIDNB_MIRROR"):
        sources.fetch("toy")


def test_unknown_dataset_or_language(toy):
    _, cache = toy
    with pytest.raises(ValueError, match="unknown dataset 'nope'.*xquad-r.*mlqa-r.*xtd10.*multi30k"):
        sources.fetch("nope")
    with pytest.raises(ValueError, match=r"unknown language\(s\) 'xx'.*valid languages: de, en"):
        sources.fetch("toy", ["en", "xx"])
    with pytest.raises(ValueError, match="valid languages: ar, de, el, en"):
        sources.fetch("xquad-r", ["en", "ja"])
    with pytest.raises(TypeError):
        sources.fetch("toy", "en")
    assert _files_under(cache) == []


# ------------------------------------------------------------------------------------------------
# fetch() by download (urlopen replaced; no network needed)
# ------------------------------------------------------------------------------------------------


def test_download_verified(toy, monkeypatch):
    _, cache = toy
    monkeypatch.delenv("HYBRIDNB_MIRROR")
    requested = []

    def fake_urlopen(url, timeout=None):
        requested.append((url, timeout))
        return io.BytesIO(TOY_CONTENT["toy/" + url.rsplit("/", 1)[1]])

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    sources.fetch("toy", ["de"])
    assert _files_under(cache) == ["raw/toy/LICENSE", "raw/toy/de.json"]
    assert {u for u, _ in requested} == {sources.RAW_FILES[p].url for p in ("toy/LICENSE", "toy/de.json")}
    assert all(t is not None and t > 0 for _, t in requested)


def test_download_failure_mentions_mirror(toy, monkeypatch):
    _, cache = toy
    monkeypatch.delenv("HYBRIDNB_MIRROR")

    def offline(url, timeout=None):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DownloadError) as exc:
        sources.fetch("toy", ["en"])
    assert "HYBRIDNB_MIRROR" in str(exc.value) and "toy/LICENSE" in str(exc.value)
    assert _files_under(cache) == []


def test_download_wrong_content(toy, monkeypatch):
    _, cache = toy
    monkeypatch.delenv("HYBRIDNB_MIRROR")
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: io.BytesIO(b"<html>404</html>"))
    with pytest.raises(ChecksumError):
        sources.fetch("toy", ["en"])
    assert _files_under(cache) == []


# ------------------------------------------------------------------------------------------------
# The real mirror
# ------------------------------------------------------------------------------------------------


@needs_mirror
@pytest.mark.slow
def test_fetch_every_dataset_from_real_mirror(tmp_path, monkeypatch):
    monkeypatch.setenv("HYBRIDNB_MIRROR", str(REAL_MIRROR))
    monkeypatch.setenv("HYBRIDNB_CACHE", str(tmp_path))
    for name, src in sources.DATASETS.items():
        assert sources.fetch(name) == tmp_path / "raw" / src.folder
    assert _files_under(tmp_path / "raw") == sorted(sources.RAW_FILES)


@needs_mirror
@pytest.mark.slow
def test_real_file_with_one_byte_changed(tmp_path, monkeypatch):
    mirror, cache = tmp_path / "mirror", tmp_path / "cache"
    for rel in ("lareqa/xquad-r/LICENSE", "lareqa/xquad-r/en.json"):
        (mirror / rel).parent.mkdir(parents=True, exist_ok=True)
        (mirror / rel).write_bytes((REAL_MIRROR / rel).read_bytes())
    monkeypatch.setenv("HYBRIDNB_MIRROR", str(mirror))
    monkeypatch.setenv("HYBRIDNB_CACHE", str(cache))
    assert sources.fetch("xquad-r", ["en"]) == cache / "raw/lareqa/xquad-r"

    data = bytearray((mirror / "lareqa/xquad-r/en.json").read_bytes())
    data[1000] = ord("X") if data[1000] != ord("X") else ord("Y")
    (mirror / "lareqa/xquad-r/en.json").write_bytes(bytes(data))
    (cache / "raw/lareqa/xquad-r/en.json").unlink()
    with pytest.raises(ChecksumError, match="lareqa/xquad-r/en.json"):
        sources.fetch("xquad-r", ["en"])
    assert _files_under(cache) == ["raw/lareqa/xquad-r/LICENSE"]
