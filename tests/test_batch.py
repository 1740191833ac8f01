"""``deepfake-edge batch`` and ``classify_dataset`` on a local Ray instance: rows, errors, scores, resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
ray = pytest.importorskip("ray", reason="the batch tests need the [ray] extra")
pq = pytest.importorskip("pyarrow.parquet", reason="the batch tests need the [ray] extra (pyarrow)")

from PIL import Image

from deepfake_edge import Detector
from deepfake_edge.batch import OutputFolder, classify_dataset
from deepfake_edge.cli import main
from deepfake_edge.cli.common import EXIT_INPUT_FAILED, EXIT_OK, EXIT_USAGE

from batch_archive import assert_same_as_predict, build_archive

KILL_TIMEOUT = 120.0  # the killed run must write its first part within this (it usually takes seconds)


@pytest.fixture(scope="module", autouse=True)
def ray_instance() -> Iterator[str]:
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024**2, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory, photo_paths: list[Path]) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("archive")
    return root, build_archive(root, photo_paths[0])


def test_cli_writes_one_row_per_input_equal_to_predict(
    binary_bundle: Path, archive: tuple[Path, list[Path]], tmp_path: Path, ray_instance: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root, inputs = archive
    for variant in Detector.load(binary_bundle).bundle.manifest.variants:
        out = tmp_path / variant
        code = main(["batch", str(binary_bundle), str(root), "--out", str(out), "--variant", variant,
                     "--address", ray_instance, "--batch-size", "4", "--rows-per-file", "5"])
        assert code == EXIT_INPUT_FAILED  # the corrupt files fail, in their rows
        table = OutputFolder(out).read()
        assert_same_as_predict(table, binary_bundle, variant, inputs)
        assert len(OutputFolder(out).parts()) > 1
        summary = capsys.readouterr().err.strip().splitlines()[-1]
        assert summary.startswith(f"deepfake-edge batch: {len(inputs)} rows written to {out} (")
        assert " errors) in " in summary and summary.endswith(" images/s")


def test_api_on_read_binary_files(binary_bundle: Path, archive: tuple[Path, list[Path]]) -> None:
    """The Python API composes with Ray's own reader; its bytes are decoded by the runtime, not by Ray."""
    root, inputs = archive
    ds = ray.data.read_binary_files(str(root), include_paths=True,
                                    file_extensions=["png", "jpg", "gif"])
    import pyarrow as pa

    result = pa.concat_tables(ray.get(classify_dataset(ds, binary_bundle, actors=1, batch_size=3).to_arrow_refs()))
    assert_same_as_predict(result, binary_bundle, Detector.load(binary_bundle).variant_name, inputs, from_bytes=True)


def test_manifests_and_globs(binary_bundle: Path, archive: tuple[Path, list[Path]], tmp_path: Path,
                             ray_instance: str) -> None:
    root, inputs = archive
    listed = inputs[:4]
    text = tmp_path / "list.txt"
    text.write_text("# inputs\n" + "\n".join(os.path.relpath(p, tmp_path) for p in listed[:2]) + "\n\nmissing.png\n")
    parquet = tmp_path / "list.parquet"
    import pyarrow as pa

    pq.write_table(pa.table({"path": [str(p) for p in listed[2:]], "other": [1, 2]}), parquet)
    glob = str(root / "nested" / "**" / "*.png")
    uri = f"file://{root / 'nested' / 'deeper'}"  # a pyarrow filesystem URI: listed and read through pyarrow
    out = tmp_path / "out"
    code = main(["batch", str(binary_bundle), str(text), str(parquet), glob, uri, "--out", str(out),
                 "--address", ray_instance])
    assert code == EXIT_INPUT_FAILED
    globbed = sorted(p for p in (root / "nested").rglob("*.png"))
    through_uri = sorted((root / "nested" / "deeper").iterdir())
    expected = [str(p) for p in dict.fromkeys([*listed, tmp_path / "missing.png", *globbed])]
    expected += [f"file://{p}" for p in through_uri]
    table = OutputFolder(out).read()
    rows = {r["path"]: r for r in table.to_pylist()}
    assert set(rows) == set(expected) and len(rows) == table.num_rows
    assert rows[str(tmp_path / "missing.png")]["error"] == "ImageReadError"
    reference = Detector.load(binary_bundle).predict([str(p) for p in through_uri])
    for path, expected_result in zip(through_uri, reference, strict=True):
        assert rows[f"file://{path}"]["scores"] == pytest.approx(expected_result.scores, abs=1e-6)
        assert rows[f"file://{path}"]["score"] == pytest.approx(expected_result.scores["fake"], abs=1e-6)


def test_refuses_a_used_out_folder_without_resume(binary_bundle: Path, archive: tuple[Path, list[Path]],
                                                  tmp_path: Path, ray_instance: str) -> None:
    _, inputs = archive
    good = [str(p) for p in inputs if p.suffix == ".gif"]
    args = ["batch", str(binary_bundle), *good, "--out", str(tmp_path), "--address", ray_instance]
    assert main(args) == EXIT_OK
    before = OutputFolder(tmp_path).parts()
    assert main(args) == EXIT_USAGE
    assert OutputFolder(tmp_path).parts() == before
    assert main([*args, "--resume"]) == EXIT_OK  # nothing left to do
    assert OutputFolder(tmp_path).parts() == before


def test_resume_after_a_killed_run(binary_bundle: Path, tmp_path: Path, photo_paths: list[Path],
                                   ray_instance: str) -> None:
    """Kill the driver mid-way, resume: every input exactly once, every file readable."""
    folder = tmp_path / "many"
    folder.mkdir()
    with Image.open(photo_paths[0]) as photo:
        small = photo.convert("RGB").resize((48, 40))
    for i in range(300):
        small.rotate(i).save(folder / f"img{i:03d}.png")
    inputs = sorted(str(p) for p in folder.iterdir())
    out = tmp_path / "out"
    args = ["batch", str(binary_bundle), str(folder), "--out", str(out), "--address", ray_instance,
            "--actors", "1", "--batch-size", "1", "--rows-per-file", "1"]
    env = {**os.environ, "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "deepfake_edge.cli", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + KILL_TIMEOUT
        while len(OutputFolder(out).parts()) < 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
        proc.stderr.close()
    written = OutputFolder(out).read().column("path").to_pylist()
    assert 0 < len(written) < len(inputs), "the kill must land mid-way"
    (out / ".tmp-part-killed.parquet").write_bytes(b"PAR1 half a file")  # what a kill mid-write leaves
    assert main([*args, "--resume"]) == EXIT_OK
    table = OutputFolder(out).read()
    paths = table.column("path").to_pylist()
    assert sorted(paths) == inputs, "no duplicates, nothing missing"
    assert not list(out.glob(".tmp-*"))
    assert pq.ParquetDataset(out).read().num_rows == len(inputs)  # the folder reads as one dataset


def test_bundle_materialises_once_per_node_and_is_checked(binary_bundle: Path, tmp_path: Path) -> None:
    from deepfake_edge.batch.shipping import materialise, pack_bundle
    from deepfake_edge.errors import ChecksumMismatchError

    payload = pack_bundle(binary_bundle)
    first = materialise(payload, tmp_path)
    assert materialise(payload, tmp_path) == first  # the second actor on a node reuses the folder
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no staging copies left behind
    assert Detector.load(first, payload.variant).variant == Detector.load(binary_bundle).variant
    model = first / Detector.load(binary_bundle).variant.file
    model.write_bytes(model.read_bytes()[:-1] + b"\0")
    with pytest.raises(ChecksumMismatchError, match=str(model)):
        materialise(payload, tmp_path)


def test_credentials_in_uris_never_reach_the_parquet_output(
    binary_bundle: Path, archive: tuple[Path, list[Path]], tmp_path: Path, ray_instance: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A real S3 API (moto's server on loopback) read by pyarrow with the secret key in the URI:
    the rows equal predict on the same files, and no row, message or line holds the key."""
    moto_server = pytest.importorskip("moto.server", reason="the S3 test needs moto[server] ([test] extra)")

    secret = "S3cret/Key+Sekr3t"
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        port = server.get_host_and_port()[1]
        query = f"endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
        import boto3  # moto's dependency; pyarrow's multipart upload trips moto, a plain PUT does not

        s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", aws_access_key_id="AKIDTEST",
                          aws_secret_access_key=secret, region_name="us-east-1")
        s3.create_bucket(Bucket="photos")
        root, inputs = archive
        uploaded = [p for p in inputs if p.parent == root][:4]
        for path in uploaded:
            s3.put_object(Bucket="photos", Key=f"cams/{path.name}", Body=path.read_bytes())
        key = f"AKIDTEST:{secret.replace('/', '%2F').replace('+', '%2B')}"
        out = tmp_path / "out"
        sources = [f"s3://{key}@photos/cams?{query}", f"s3://{key}@photos/missing.jpg?{query}"]
        code = main(["batch", str(binary_bundle), *sources, "--out", str(out), "--address", ray_instance])
        resumed = main(["batch", str(binary_bundle), *sources, "--out", str(out), "--address", ray_instance,
                        "--resume"])
    finally:
        server.stop()
    captured = capsys.readouterr()
    assert code == EXIT_INPUT_FAILED and resumed == EXIT_OK  # the missing object is an error row; then nothing to do
    assert "resuming: 5 of 5 inputs already written, 0 to go" in captured.err
    table = OutputFolder(out).read()
    rows = {row["path"]: row for row in table.to_pylist()}
    shown = f"s3://AKIDTEST:***@photos/{{}}?{query}"
    assert set(rows) == {shown.format(f"cams/{p.name}") for p in uploaded} | {shown.format("missing.jpg")}
    missing = rows[shown.format("missing.jpg")]
    assert missing["error"] == "ImageReadError" and missing["message"].startswith(shown.format("missing.jpg") + ": ")
    reference = Detector.load(binary_bundle).predict([str(p) for p in uploaded], on_error="return")
    for path, expected in zip(uploaded, reference, strict=True):
        row = rows[shown.format(f"cams/{path.name}")]
        assert row["label"] == getattr(expected, "label", None)
        assert row["error"] == (None if row["label"] else type(expected.error).__name__)  # type: ignore[union-attr]
    assert sum(row["label"] is not None for row in rows.values()) >= 2  # read through S3 and classified
    everything = str(table.to_pylist()) + captured.out + captured.err
    raw = b"".join(part.read_bytes() for part in OutputFolder(out).parts())
    for text in (secret, "Sekr3t", "S3cret%2FKey"):
        assert text not in everything and text.encode() not in raw
