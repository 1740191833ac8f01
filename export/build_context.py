"""What a recipe's build step gets: paths, model geometry and calibration data."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .budget import FidelityBudget


@dataclass(frozen=True)
class BuildContext:
    fp32: Path                       # the validated fp32 export
    out: Path                        # where the recipe writes its model
    calibration: np.ndarray          # NCHW float32, images recipes may tune on (never the held-out set)
    calibration_names: list[str]
    calibration_reference: np.ndarray  # fp32 logits on ``calibration``, one image per run
    labels: tuple[str, ...]
    positive: str | None
    num_heads: int
    hidden_size: int
    budget: FidelityBudget = field(default_factory=FidelityBudget)
    tune: bool = True                # False: skip calibration-driven search (same graph and speed)
    keep_fp32: int = 0               # int8: at least this many most-sensitive MatMuls stay fp32
    log: Callable[[str], None] = print
