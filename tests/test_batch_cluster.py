"""A real two-node Ray cluster on loopback: actors on both nodes, the bundle shipped, no shared path.

``ray.cluster_utils.Cluster`` starts two raylets with their own object stores
and resources; each node's processes get their own ``TMPDIR``, where the
actors materialise the bundle. The driver's copy of the bundle is deleted
before the job runs, so the model can only have reached the nodes through
Ray's object store.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
ray = pytest.importorskip("ray", reason="the cluster tests need the [ray] extra")
cluster_utils = pytest.importorskip("ray.cluster_utils", reason="the cluster tests need the [ray] extra")

import pyarrow as pa

from deepfake_edge import Detector
from deepfake_edge.batch import classify_dataset
from deepfake_edge.batch.shipping import CACHE_FOLDER

from batch_archive import assert_same_as_predict, build_archive

NODE_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """{node resource name: that node's TMPDIR}; one CPU per node, so two actors must use both."""
    temp = {name: tmp_path_factory.mktemp(f"tmp-{name}") for name in ("node_a", "node_b")}
    cluster = cluster_utils.Cluster()
    try:
        for name, folder in temp.items():
            cluster.add_node(num_cpus=1, resources={name: 1}, object_store_memory=100 * 1024**2,
                             include_dashboard=False, env_vars={"TMPDIR": str(folder)})
        cluster.wait_for_nodes(timeout=NODE_TIMEOUT)
        ray.init(address=cluster.address, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        alive = [n for n in ray.nodes() if n["Alive"]]
        assert sorted(r for n in alive for r in n["Resources"] if r.startswith("node_")) == sorted(temp)
        yield temp
    finally:
        ray.shutdown()
        cluster.shutdown()  # stops the processes this cluster started, by pid


def test_actors_on_both_nodes_get_the_bundle_through_the_object_store(
    two_nodes: dict[str, Path], binary_bundle: Path, photo_paths: list[Path], tmp_path: Path,
) -> None:
    (tmp_path / "archive").mkdir()
    inputs = build_archive(tmp_path / "archive", photo_paths[0])
    driver_copy = tmp_path / "driver-bundle"
    shutil.copytree(binary_bundle, driver_copy)
    variant = Detector.load(binary_bundle).variant_name
    ds = ray.data.from_arrow([pa.table({"path": [str(p) for p in inputs[i::4]]}) for i in range(4)])
    results = classify_dataset(ds, driver_copy, actors=2, cpus_per_actor=1, batch_size=2)
    shutil.rmtree(driver_copy)  # from here on, no node can read the bundle from the driver's disk
    table = pa.concat_tables(ray.get(results.to_arrow_refs()))
    assert_same_as_predict(table, binary_bundle, variant, inputs)
    for node, folder in two_nodes.items():
        shipped = list((folder / CACHE_FOLDER).glob("*/.complete"))
        assert len(shipped) == 1, f"{node}: no actor materialised the bundle in its own temp dir {folder}"
        assert (shipped[0].parent / "manifest.json").is_file()
