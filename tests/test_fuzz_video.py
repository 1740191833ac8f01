"""Fuzzing the video path: 240 mutated clips through ``deepfake-edge scan`` and ``POST /v1/classify/video``.

Seeds are tiny real clips written with PyAV (H.264 and VP9, each in MP4 and MKV); the mutants
are bit flips (anywhere, and in the headers), truncations and spliced headers (the head of
one seed on the body of another), from a fixed random seed. Every clip must get a result or
an error line (the CLI) or a documented answer (the service), each within a bound; nothing
may crash, no temporary file may stay, and the peak RSS stays bounded. The figures are printed
(``-s``) for the record.
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the service needs the [serve] extra")
pytest.importorskip("av", reason="video needs the [video] extra")

import numpy as np
from video_factory import frames_of, write_video

from deepfake_edge import Detector
from deepfake_edge.video.decoding import CHILD_NAME, prepare

from serve_helpers import FAST, running

CLI = [sys.executable, "-m", "deepfake_edge.cli"]
SEEDS = {  # name -> (codec, suffix)
    "h264-mp4": ("h264", ".mp4"), "h264-mkv": ("h264", ".mkv"), "vp9-mp4": ("vp9", ".mp4"), "vp9-mkv": ("vp9", ".mkv"),
}
MUTANTS_PER_KIND = 15  # x 4 kinds x 4 seeds = 240 clips
PER_CLIP_S = 30.0  # no clip may take longer than this to be answered (a hang fails the test)
# The answers a mutant may get: a result, or a documented refusal of the clip.
SERVICE_OUTCOMES = {200: {None}, 400: {"invalid_video"}, 413: {"image_too_large"},
                    500: {"decoder_crashed", "decoder_out_of_memory"}}


def _mutants(seeds: dict[str, bytes]) -> Iterator[tuple[str, bytes]]:
    rng = np.random.default_rng(20261204)
    names = sorted(seeds)
    for name in names:
        data = seeds[name]
        for i in range(MUTANTS_PER_KIND):
            flipped = bytearray(data)
            for pos in rng.integers(0, len(data), int(rng.integers(1, 65))):
                flipped[pos] ^= 1 << int(rng.integers(0, 8))
            yield f"{name}-flip{i}", bytes(flipped)
            head = bytearray(data)
            for pos in rng.integers(0, min(len(data), 600), int(rng.integers(1, 9))):
                head[pos] ^= 1 << int(rng.integers(0, 8))
            yield f"{name}-headflip{i}", bytes(head)
            yield f"{name}-cut{i}", data[:int(rng.integers(1, len(data)))]
            other = seeds[names[int(rng.integers(0, len(names)))]]
            k = int(rng.integers(16, 1200))
            yield f"{name}-splice{i}", data[:k] + other[int(rng.integers(0, len(other) // 2)):]


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("seeds")
    seeds = {name: write_video(folder / f"{name}{suffix}", frames_of(12, 32, 32, seed=i), codec=codec, rate=6,
                               gop=4).read_bytes()
             for i, (name, (codec, suffix)) in enumerate(SEEDS.items())}
    out = tmp_path_factory.mktemp("mutants")
    paths = []
    for name, data in _mutants(seeds):
        path = out / f"{name}{SEEDS['-'.join(name.split('-')[:2])][1]}"
        path.write_bytes(data)
        paths.append(path)
    assert len(paths) >= 200
    return paths


def _peak_rss_kb() -> int:
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0])


def test_the_scan_cli_answers_every_mutant(binary_bundle: Path, clips: list[Path], tmp_path: Path) -> None:
    """One CLI process over the folder of mutants (no isolation: FFmpeg's own robustness is what is tested)."""
    spool = tmp_path / "tmp"
    spool.mkdir()
    env = {**os.environ, "TMPDIR": str(spool)}
    stderr = tmp_path / "stderr.txt"
    with stderr.open("w") as err:
        proc = subprocess.Popen([*CLI, "scan", str(binary_bundle), str(clips[0].parent), "--fps", "2",
                                 "--variant", "fp32", "--no-progress", "--timeout", "10"],
                                stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    # The child's own high-water mark, polled: VmHWM starts afresh at exec, while ru_maxrss would carry
    # this process's peak into its child (and a full test session is far larger than the scan).
    peak_kb = [0]
    done = threading.Event()

    def watch_memory() -> None:
        while not done.wait(0.05):
            try:
                status = Path(f"/proc/{proc.pid}/status").read_text()
                peak_kb[0] = max(peak_kb[0], int(status.split("VmHWM:")[1].split()[0]))
            except (OSError, IndexError, ValueError):  # gone, or a zombie without memory figures
                return

    threading.Thread(target=watch_memory, daemon=True).start()
    outcomes: Counter[str] = Counter()
    started = time.monotonic()
    ended = False
    try:
        while (line := lines.get(timeout=PER_CLIP_S)) is not None:  # queue.Empty here is a hang
            record = json.loads(line)
            if "error" in record:
                outcomes[record["error"]] += 1
                assert record["message"].startswith(record["source"] + ": ")
            elif "frames" in record:
                outcomes["summary"] += 1
        ended = True
    finally:
        if not ended:
            os.kill(proc.pid, signal.SIGKILL)  # not proc.kill(): its poll() would reap it, losing the rusage
        done.set()
        _, status, _usage = os.wait4(proc.pid, 0)  # reaped here, not by Popen
        proc.returncode = os.waitstatus_to_exitcode(status)
        assert proc.stdout is not None
        proc.stdout.close()
    elapsed = time.monotonic() - started
    assert proc.returncode in (0, 1), stderr.read_text()  # 1: some sources failed; never a signal
    assert "Traceback" not in stderr.read_text(), stderr.read_text()
    assert sum(outcomes.values()) == len(clips)  # one summary or one error line per clip
    assert set(outcomes) <= {"summary", "VideoDecodeError", "ImageTooLargeError"}  # files that exist: no open error
    # onnxruntime writes its session marker .ses into TMPDIR when it is imported: once, not per clip
    assert [p.name for p in spool.iterdir() if p.name != ".ses"] == []
    peak_mb = peak_kb[0] / 1024
    assert peak_mb > 20  # polled while it ran: a Python process with onnxruntime and PyAV loaded
    print(f"\nscan CLI: {len(clips)} mutants in {elapsed:.1f} s, outcomes {dict(outcomes)}, peak RSS {peak_mb:.0f} MB")
    assert peak_mb < 1000


def test_the_service_answers_every_mutant_and_stays_up(
    binary_bundle: Path, clips: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    prepare()  # the forkserver's folder is the process's, made before the spool folder is swapped in
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    detector = Detector.load(binary_bundle, "fp32")
    config = dataclasses.replace(FAST, timeout_s=PER_CLIP_S, video_memory_mb=512)
    outcomes: Counter[str] = Counter()
    Path("/proc/self/clear_refs").write_text("5")  # restart the peak RSS (VmHWM) count from now
    baseline_kb = _peak_rss_kb()
    started = time.monotonic()
    with running(detector, config) as (_, client):
        for clip in clips:
            answer = client.post("/v1/classify/video", content=clip.read_bytes(), params={"fps": "2"},
                                 headers={"content-type": "video/mp4"}, timeout=PER_CLIP_S + 10)
            code = answer.json().get("error")
            assert code in SERVICE_OUTCOMES.get(answer.status_code, set()), (clip.name, answer.text)
            if code is not None:
                assert answer.json()["message"].startswith("<request body>: ")  # never the spooled file's path
            outcomes[code or "ok"] += 1
        assert client.get("/healthz").status_code == 200 and client.get("/readyz").status_code == 200
        good = client.post("/v1/classify/video", content=clips[0].read_bytes(), headers={"content-type": "video/mp4"})
        assert good.status_code in (200, 400)  # the service still answers after every mutant
    elapsed = time.monotonic() - started
    peak_mb = (_peak_rss_kb() - baseline_kb) / 1024
    import multiprocessing

    assert not [c for c in multiprocessing.active_children() if c.name == CHILD_NAME]
    assert list(spool.iterdir()) == []
    print(f"\nservice: {len(clips)} mutants in {elapsed:.1f} s, outcomes {dict(outcomes)}, "
          f"peak RSS of the serving process {baseline_kb / 1024:.0f} MB + {peak_mb:.0f} MB")
    assert peak_mb < 300
