"""Scale-out batch classification on Ray Data (the ``[ray]`` extra).

``import deepfake_edge`` never imports this package; importing it needs ray::

    import ray
    from deepfake_edge.batch import classify_dataset

    ds = ray.data.read_binary_files("s3://bucket/photos/", include_paths=True)
    classify_dataset(ds, "bundle/").write_parquet("s3://bucket/results/")
"""

from __future__ import annotations

from ..extras import require_extra

require_extra("ray")  # a clear ExtraNotInstalledError, not a ModuleNotFoundError from deep inside

from .classify import classify_dataset, result_schema
from .job import JobSummary, run_job
from .output import OutputFolder
from .sources import resolve_sources

__all__ = ["JobSummary", "OutputFolder", "classify_dataset", "resolve_sources", "result_schema", "run_job"]
