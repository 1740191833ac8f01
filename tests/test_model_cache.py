"""The sha256 cache: a model file is hashed once, and any change to it is still caught."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from deepfake_edge import ChecksumMismatchError, Detector, model_cache
from deepfake_edge.session import create_session

INT8 = "model_int8.onnx"
SETTLE_S = 0.05  # RACY_SECONDS in these tests: how long a file must have been still before it is recorded


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DEEPFAKE_EDGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(model_cache, "RACY_SECONDS", SETTLE_S)
    return tmp_path / "cache"


@pytest.fixture
def hashes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every full hash the cache computes, by path."""
    seen: list[Path] = []
    real = model_cache.sha256_file

    def counting(path: Path, chunk: int = 1 << 20) -> str:
        seen.append(path)
        return real(path, chunk)

    monkeypatch.setattr(model_cache, "sha256_file", counting)
    return seen


def _settle(path: Path) -> None:
    """Wait (bounded) until ``path`` last changed more than SETTLE_S ago, so its hash may be recorded."""
    deadline = time.monotonic() + 10
    while time.time_ns() - path.stat().st_ctime_ns <= SETTLE_S * 2e9:
        assert time.monotonic() < deadline, "the clock did not advance"
        time.sleep(0.01)


@pytest.fixture
def bundle(binary_bundle: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(binary_bundle, copy)
    _settle(copy / INT8)
    return copy


def _expected(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.usefixtures("cache")
def test_a_settled_file_is_hashed_once(bundle: Path, hashes: list[Path]) -> None:
    Detector.load(bundle, "int8")
    Detector.load(bundle, "int8")
    assert [h for h in hashes if h.parent == bundle] == [bundle / INT8]
    assert model_cache.file_sha256(bundle / INT8) == _expected(bundle / INT8)


def _same_size_same_mtime(path: Path, change: Callable[[Path], None]) -> None:
    before = path.stat()
    change(path)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    # the premise: only the content, the inode or the ctime tell the two files apart
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert after.st_ctime_ns != before.st_ctime_ns or after.st_ino != before.st_ino


def _flip_in_place(path: Path) -> None:
    with path.open("r+b") as fp:
        fp.seek(path.stat().st_size // 2)
        byte = fp.read(1)
        fp.seek(-1, os.SEEK_CUR)
        fp.write(bytes([byte[0] ^ 0xFF]))


def _replace_with_copy(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF
    other = path.with_suffix(".new")
    other.write_bytes(bytes(data))
    os.replace(other, path)


@pytest.mark.usefixtures("cache")
@pytest.mark.parametrize("change", [_flip_in_place, _replace_with_copy], ids=["byte-flipped", "file-replaced"])
def test_a_changed_file_is_caught_after_being_cached(bundle: Path, hashes: list[Path],
                                                     change: Callable[[Path], None]) -> None:
    Detector.load(bundle, "int8")  # hashed and recorded
    _same_size_same_mtime(bundle / INT8, change)
    with pytest.raises(ChecksumMismatchError, match="sha256"):
        Detector.load(bundle, "int8")
    assert [h for h in hashes if h.parent == bundle] == [bundle / INT8] * 2


def test_a_file_changed_just_now_is_not_recorded(binary_bundle: Path, tmp_path: Path, cache: Path,
                                                 hashes: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """A write in the same clock tick as the hash would not move the ctime: such a file is hashed every time."""
    monkeypatch.setattr(model_cache, "RACY_SECONDS", 3600.0)
    path = tmp_path / INT8
    shutil.copyfile(binary_bundle / INT8, path)
    for _ in range(2):
        assert model_cache.file_sha256(path) == _expected(path)
    assert hashes == [path, path]
    assert not list(cache.rglob("*.json"))


@pytest.mark.usefixtures("cache")
def test_a_damaged_cache_record_means_a_full_hash(bundle: Path, hashes: list[Path]) -> None:
    path = bundle / INT8
    model_cache.file_sha256(path)
    (record,) = (model_cache.cache_dir() / "sha256").rglob("*.json")
    record.write_text("{not json")
    assert model_cache.file_sha256(path) == _expected(path)
    record.write_text('{"version": 1, "sha256": 5}')
    assert model_cache.file_sha256(path) == _expected(path)
    assert len(hashes) == 3


def test_an_unusable_cache_directory_means_a_full_hash(bundle: Path, tmp_path: Path, hashes: list[Path],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("the cache directory cannot be created under a file")
    monkeypatch.setenv("DEEPFAKE_EDGE_CACHE", str(blocker / "cache"))
    monkeypatch.setattr(model_cache, "RACY_SECONDS", SETTLE_S)
    for _ in range(2):
        assert Detector.load(bundle, "int8").variant_name == "int8"
    assert len(hashes) == 2 and not blocker.is_dir()


def test_write_atomic_leaves_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    target = tmp_path / "record.json"
    target.write_text("old")

    def fails(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        model_cache.write_atomic(target, fails)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]


# -- onnxruntime's optimized copy ------------------------------------------------------------------
def _optimized_entries(cache: Path) -> list[Path]:
    return sorted(p for p in (cache / "optimized").iterdir() if not p.name.startswith("."))


def _logits(detector: Detector, photo_paths: list[Path]) -> np.ndarray:
    return detector.logits(detector.preprocess(photo_paths[:3]))


def _reference_logits(bundle: Path, photo_paths: list[Path]) -> np.ndarray:
    """onnxruntime on the bundle's own file, no cache involved."""
    detector = Detector.load(bundle, "int8")
    detector.session = create_session(bundle / INT8)  # a plain session: optimized at load, never cached
    return _logits(detector, photo_paths)


def test_the_optimized_copy_is_stored_once_then_loaded(bundle: Path, cache: Path, photo_paths: list[Path],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    expected = _reference_logits(bundle, photo_paths)
    (entry,) = _optimized_entries(cache)
    assert {p.name for p in entry.iterdir()} == {"model.onnx", "model.data", "record.json"}
    opened: list[str] = []
    real = ort.InferenceSession

    def spy(path: str, *args: object, **kwargs: object) -> ort.InferenceSession:
        opened.append(str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", spy)
    for _ in range(2):
        np.testing.assert_array_equal(_logits(Detector.load(bundle, "int8"), photo_paths), expected)
    assert opened == [str(entry / "model.onnx")] * 2 and _optimized_entries(cache) == [entry]
    opened.clear()
    Detector.load(bundle, "int8", verify=False)  # unverified: the bundle's file itself, no copy
    assert opened == [str(bundle / INT8)]


@pytest.mark.parametrize("damaged", ["model.data", "model.onnx"])
def test_a_damaged_optimized_copy_is_rebuilt_not_used(bundle: Path, cache: Path, photo_paths: list[Path],
                                                      damaged: str) -> None:
    expected = _reference_logits(bundle, photo_paths)
    (entry,) = _optimized_entries(cache)
    Detector.load(bundle, "int8")  # its files' hashes are now recorded by identity
    original = (entry / damaged).read_bytes()
    _settle(entry / damaged)
    _same_size_same_mtime(entry / damaged, _flip_in_place)
    assert (entry / damaged).read_bytes() != original
    np.testing.assert_array_equal(_logits(Detector.load(bundle, "int8"), photo_paths), expected)
    (rebuilt,) = _optimized_entries(cache)
    assert (rebuilt / damaged).read_bytes() == original


def test_without_a_usable_cache_the_model_loads_as_it_is(bundle: Path, tmp_path: Path, photo_paths: list[Path],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("the cache directory cannot be created under a file")
    monkeypatch.setenv("DEEPFAKE_EDGE_CACHE", str(blocker / "cache"))
    expected = _logits(Detector.load(bundle, "int8", verify=False), photo_paths)
    np.testing.assert_array_equal(_logits(Detector.load(bundle, "int8"), photo_paths), expected)
