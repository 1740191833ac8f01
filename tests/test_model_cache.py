"""The sha256 cache: a model file is hashed once, and any change to it is still caught."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from deepfake_edge import ChecksumMismatchError, Detector, model_cache

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
    assert hashes == [bundle / INT8]
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
    assert hashes == [bundle / INT8] * 2


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
    (record,) = model_cache.cache_dir().rglob("*.json")
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
    assert len(hashes) == 2


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
