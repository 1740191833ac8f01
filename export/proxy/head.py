"""The fake/real head of the proxy, fitted on mean-pooled features of the *fit* images only.

Shipped photos are "real", deterministic synthetic images are "fake"; the
head is then scaled so the logits are meaningful, confident but not saturated
(saturated probabilities would hide quantization error).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ProxyBuildError
from .dinov2 import HIDDEN_SIZE
from .transplant import LABEL2ID, pooled_features

if TYPE_CHECKING:  # pragma: no cover - typing only
    from transformers import SiglipForImageClassification, SiglipImageProcessor

# The head is rescaled so that the median |logit_real - logit_fake| on the fit set is
# this many nats: P ~ 0.98 on typical fit images, so held-out images spread out over
# (0, 1) instead of sitting at exactly 0.0/1.0 where quantization deltas vanish.
TARGET_MEDIAN_MARGIN = 4.0
# sklearn's C on standardized features; moderate L2 keeps the direction stable on a
# small, perfectly separable fit set.
LOGREG_C = 0.1

# heldout_images() draws its synthetic images with this seed; the fit set must not.
HELDOUT_SYNTHETIC_SEED = 1
FIT_SYNTHETIC_SEED_BASE = 1000


@dataclass
class HeadReport:
    """How the fake/real head was fitted and how it behaves on held-out images."""

    n_real: int
    n_fake: int
    fit_synthetic_seed: int
    fit_accuracy: float
    scale: float  # factor applied to the logistic-regression logit
    fit_median_margin: float
    heldout_accuracy: float
    heldout_median_margin: float  # median |logit_real - logit_fake| on held-out images
    heldout_p_fake: dict[str, float]  # name -> P(fake)
    heldout_p_fake_quantiles: dict[str, float]
    heldout_p_fake_histogram: dict[str, int]


def fit_head(
    model: SiglipForImageClassification, processor: SiglipImageProcessor, *, seed: int,
    margin: float = TARGET_MEDIAN_MARGIN,
) -> HeadReport:
    """Fit the 2-label classifier on FIT images only, then measure it on held-out images.

    ``margin``: the median |logit margin| on the fit images the head is scaled to (a smaller one puts
    more held-out images near the decision boundary, where quantization error shows most).
    """
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from ..sample_images import heldout_images, photos, synthetic_images

    real = photos("fit")
    if not real:
        raise ProxyBuildError("no FIT photos installed (scikit-image is needed: pip install 'deepfake-edge[export]')")
    synth_seed = FIT_SYNTHETIC_SEED_BASE + seed
    if synth_seed == HELDOUT_SYNTHETIC_SEED:
        raise ProxyBuildError("fit synthetic seed collides with the held-out one")
    fake = synthetic_images(len(real), seed=synth_seed)  # balanced classes
    x = pooled_features(model, processor, [im.image for im in fake + real])
    y = np.array([LABEL2ID["fake"]] * len(fake) + [LABEL2ID["real"]] * len(real))

    scaler = StandardScaler().fit(x)
    clf = LogisticRegression(C=LOGREG_C, max_iter=5000, random_state=seed).fit(scaler.transform(x), y)
    # Fold the standardization into one affine map z = w.x + b (z > 0 means "real").
    w = clf.coef_[0] / scaler.scale_
    b = float(clf.intercept_[0] - np.dot(w, scaler.mean_))
    z = x @ w + b
    fit_accuracy = float(np.mean((z > 0) == (y == LABEL2ID["real"])))
    scale = margin / float(np.median(np.abs(z)))
    w, b = w * scale, b * scale
    # Split the margin symmetrically: logit_real - logit_fake = z.
    weight = np.zeros((2, HIDDEN_SIZE))
    bias = np.zeros(2)
    weight[LABEL2ID["real"]], bias[LABEL2ID["real"]] = w / 2, b / 2
    weight[LABEL2ID["fake"]], bias[LABEL2ID["fake"]] = -w / 2, -b / 2
    with torch.no_grad():
        model.classifier.weight.copy_(torch.from_numpy(weight).float())
        model.classifier.bias.copy_(torch.from_numpy(bias).float())

    held = heldout_images()
    with torch.inference_mode():
        pix = processor(images=[im.image for im in held], return_tensors="pt")["pixel_values"]
        logits = model(pixel_values=pix).logits
        p_fake = torch.softmax(logits, dim=-1)[:, LABEL2ID["fake"]].numpy().astype(float)
        held_margin = (logits[:, LABEL2ID["real"]] - logits[:, LABEL2ID["fake"]]).abs().numpy()
    is_fake = np.array([im.name.startswith("synthetic-") for im in held])
    edges = [0.0, 0.01, 0.1, 0.5, 0.9, 0.99, 1.0]
    hist, _ = np.histogram(p_fake, bins=edges)
    return HeadReport(
        n_real=len(real),
        n_fake=len(fake),
        fit_synthetic_seed=synth_seed,
        fit_accuracy=fit_accuracy,
        scale=scale,
        fit_median_margin=float(np.median(np.abs(z * scale))),
        heldout_accuracy=float(np.mean((p_fake > 0.5) == is_fake)),
        heldout_median_margin=float(np.median(held_margin)),
        heldout_p_fake={im.name: float(p) for im, p in zip(held, p_fake, strict=True)},
        heldout_p_fake_quantiles={
            q: float(np.quantile(p_fake, float(q))) for q in ("0", "0.1", "0.25", "0.5", "0.75", "0.9", "1")
        },
        heldout_p_fake_histogram={
            f"[{lo:g},{hi:g})": int(n) for lo, hi, n in zip(edges[:-1], edges[1:], hist, strict=True)
        },
    )
