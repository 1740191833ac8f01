"""Classify a Ray Dataset of image paths (and optionally their bytes) with a pool of actors.

Each actor loads the bundle once (shipped through the object store, see
``shipping``), decodes inside the actor with the runtime's own safe decoder,
and turns every input into exactly one output row: a bad file is a row with
``error`` and ``message``, never a failed task or a dropped block. A row's
``path`` is the input's masked name (``s3://key:***@bucket/x.jpg``): a password
or token in a URI never reaches the Parquet output or a message.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from ..credentials import Source
from ..detector import Detector
from ..errors import CredentialError, ImageError, ImageReadError
from ..images import DEFAULT_MAX_PIXELS
from ..results import Failure, Prediction
from .shipping import BundlePayload, materialise, pack_bundle
from .sources import is_uri

if TYPE_CHECKING:
    import ray.data

__all__ = ["DEFAULT_BATCH_SIZE", "classify_dataset", "default_actors", "result_schema"]

DEFAULT_BATCH_SIZE = 16


def result_schema(labels: Sequence[str]) -> pa.Schema:
    """The output columns: one row per input.

    ``label``/``scores`` are null on error, ``error``/``message`` null on success; ``score`` (the
    manipulation score, ``decision.ScoreRule``) is also null for a bundle exported without a rule.
    """
    return pa.schema([
        ("path", pa.string()),
        ("label", pa.string()),
        ("scores", pa.struct([(label, pa.float64()) for label in labels])),
        ("score", pa.float64()),
        ("error", pa.string()),
        ("message", pa.string()),
        ("variant", pa.string()),
        ("model_sha256", pa.string()),
    ])


def default_actors(cpus_per_actor: int, *, spare_cpus: int = 1) -> int:
    """As many actors as the cluster's CPUs allow at ``cpus_per_actor`` each, after ``spare_cpus`` (at least one).

    The spare CPU is for upstream read tasks: an actor pool holding every CPU
    would leave them none, and the pipeline would wait forever for input.
    """
    import ray

    return max(1, (int(ray.cluster_resources().get("CPU", 1)) - spare_cpus) // cpus_per_actor)


def _read_uri(location: Source) -> bytes:
    """The bytes at a pyarrow URI (placeholders filled now, on the worker); errors name it masked."""
    from pyarrow import fs

    url = location.secret_url(ImageReadError)
    try:
        filesystem, path = fs.FileSystem.from_uri(url)
        with filesystem.open_input_stream(path) as stream:
            return stream.read()
    except (OSError, ValueError) as exc:  # pyarrow's message may repeat the URI: scrubbed, and not chained
        raise ImageReadError(location.name, f"cannot read ({location.scrub(str(exc))})") from None


class _Classifier:
    """The actor: one ``Detector`` per actor, intra-op threads = the actor's CPUs, inter-op 1."""

    def __init__(self, payload: list[Any], threads: int, threshold: float | None, max_pixels: int | None,
                 fast_decode: bool = False) -> None:
        import ray

        # The payload arrives wrapped in a list so Ray hands over the reference, not the
        # value: the bytes are fetched only on a node where they were not materialised yet.
        shipped: BundlePayload = ray.get(payload[0])
        folder = materialise(shipped)
        self.detector = Detector.load(folder, shipped.variant, threads=threads, verify=True,
                                      threshold=threshold, max_pixels=max_pixels, fast_decode=fast_decode)
        self.schema = result_schema(self.detector.labels)
        self.model_sha256 = self.detector.variant.sha256
        self.node_folder = str(folder)

    def __call__(self, batch: pa.Table) -> pa.Table:
        paths = [str(p) for p in batch.column("path").to_pylist()]
        data = batch.column("bytes").to_pylist() if "bytes" in batch.column_names else [None] * len(paths)
        results: list[Prediction | Failure | None] = [None] * len(paths)
        names = list(paths)  # masked below
        decoded: list[int] = []
        tensors: list[np.ndarray] = []
        for i, (path, raw) in enumerate(zip(paths, data, strict=True)):
            try:
                location = Source.of(path)
                names[i] = location.name
                image = raw if raw is not None else (_read_uri(location) if is_uri(path) else path)
                tensors.append(self.detector.decode(image, name=location.name))
            except CredentialError as exc:  # a ${...} that is not a DEEPFAKE_EDGE_* placeholder
                results[i] = Failure(source=exc.source, error=ImageReadError(exc.source, exc.reason))
                continue
            except ImageError as exc:
                results[i] = Failure(source=names[i], error=exc)
                continue
            decoded.append(i)
        if tensors:
            done = self.detector.results([names[i] for i in decoded], self.detector.logits(np.stack(tensors)))
            for i, result in zip(decoded, done, strict=True):
                results[i] = result
        return self._table(results)

    def _table(self, results: Sequence[Prediction | Failure | None]) -> pa.Table:
        rows = []
        for r in results:
            assert r is not None  # every slot is filled above: one row per input
            ok = isinstance(r, Prediction)
            rows.append({
                "path": r.source,
                "label": r.label if isinstance(r, Prediction) else None,
                "scores": r.scores if isinstance(r, Prediction) else None,
                "score": r.score if isinstance(r, Prediction) else None,
                "error": None if ok else type(r.error).__name__,  # type: ignore[union-attr]
                "message": None if ok else str(r.error),  # type: ignore[union-attr]
                "variant": self.detector.variant_name,
                "model_sha256": self.model_sha256,
            })
        return pa.Table.from_pylist(rows, schema=self.schema)


def classify_dataset(
    ds: ray.data.Dataset,
    bundle: str | os.PathLike[str],
    *,
    variant: str | None = None,
    threshold: float | None = None,
    actors: int | None = None,
    cpus_per_actor: int = 1,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    fast_decode: bool = False,
) -> ray.data.Dataset:
    """Add the result columns to ``ds``: one output row per input row (lazy, like every Ray Dataset).

    ``ds`` needs a ``path`` column (string: a local path or a pyarrow URI) and
    may carry the file's ``bytes`` (e.g. ``ray.data.read_binary_files(...,
    include_paths=True)``); without them each actor reads the path itself.
    The bundle is read here, on the driver, and shipped through the object
    store, so the workers need no access to ``bundle``. ``actors`` defaults to
    as many as the cluster's CPUs allow at ``cpus_per_actor`` each, leaving
    one CPU for the tasks that read ``ds``; each actor reserves
    ``cpus_per_actor`` CPUs and runs onnxruntime with that many intra-op
    threads (inter-op 1), so actors never oversubscribe a node. ``fast_decode``: see ``Detector.load``.
    """
    import ray

    if cpus_per_actor < 1 or batch_size < 1 or (actors is not None and actors < 1):
        raise ValueError(
            f"actors, cpus_per_actor and batch_size must be >= 1, got {actors}, {cpus_per_actor}, {batch_size}"
        )
    payload = pack_bundle(Path(bundle), variant)
    if not ray.is_initialized():
        ray.init()
    if actors is None:
        actors = default_actors(cpus_per_actor)
    return ds.map_batches(
        _Classifier,
        batch_format="pyarrow",
        batch_size=batch_size,
        fn_constructor_kwargs={"payload": [ray.put(payload)], "threads": cpus_per_actor,
                               "threshold": threshold, "max_pixels": max_pixels, "fast_decode": fast_decode},
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=cpus_per_actor,
        udf_modifying_row_count=False,
    )
