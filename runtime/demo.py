"""The model card's Gradio demo, now on the ONNX runtime (needs the [demo] extra).

The model card's interface: an image in (``gr.Image(type="pil")``), the label
probabilities out (``gr.Label``), a title and a description. The card's
``classify_image`` ran ``SiglipForImageClassification`` under torch; here the
same function body is a ``Detector.predict_one`` call, so the demo needs no
torch and shows exactly what ``deepfake-edge predict`` and the HTTP API answer.

gradio is imported lazily (it takes seconds), only by :func:`build_demo`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from PIL import Image

from .errors import ImageError
from .evidence import evidence_overlay
from .extras import require_extra

if TYPE_CHECKING:
    from .apikeys import ApiKeys
    from .detector import Detector

__all__ = ["AUTH_MESSAGE", "DESCRIPTION", "TITLE", "build_demo", "classify_function", "evidence_function",
           "gradio_auth"]

TITLE = "Deepfake Detector"
DESCRIPTION = (
    "Upload an image to classify whether it is fake or real. "
    "Runs on this computer's CPU with the ONNX runtime (no torch)."
)


AUTH_MESSAGE = "Any user name; the password is an API key of this device (as for deepfake-edge serve)."


def gradio_auth(keys: ApiKeys | None) -> Callable[[str, str], bool] | None:
    """Gradio's ``launch(auth=...)``: any user name, and one of ``keys`` as the password; None without keys.

    The key is checked like the service checks a bearer key (constant time, every key).
    """
    if keys is None:
        return None

    def check(_username: str, password: str) -> bool:
        return keys.matches(password)

    return check


def _import_gradio() -> Any:
    require_extra("demo")
    # A demo on an appliance or laptop must not phone home.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio

    return gradio


def classify_function(detector: Detector) -> Callable[[Image.Image | None], dict[str, float]]:
    """The card's ``classify_image``: a PIL image -> {label: probability} for every label.

    Unlike the card, probabilities are not rounded to 3 decimals (gr.Label
    formats them itself). ``None`` (nothing uploaded yet) gives ``{}``, which
    gr.Label shows as empty. A broken image raises its ``ImageError``.
    """

    def classify_image(image: Image.Image | None) -> dict[str, float]:
        if image is None:
            return {}
        return dict(detector.predict_one(image).scores)

    return classify_image


def evidence_function(detector: Detector) -> Callable[[Image.Image | None], tuple[dict[str, float],
                                                                                   Image.Image | None]]:
    """Like :func:`classify_function`, plus the evidence map drawn over the image (``evidence_overlay``)."""
    positive = detector.require_evidence()

    def classify_image(image: Image.Image | None) -> tuple[dict[str, float], Image.Image | None]:
        if image is None:
            return {}, None
        result = detector.predict_one(image, evidence=True)
        return dict(result.scores), evidence_overlay(result, image, positive_label=positive)

    return classify_image


def build_demo(detector: Detector, *, title: str = TITLE, description: str = DESCRIPTION) -> Any:
    """The ``gr.Interface`` of the model card, powered by ``detector``; call ``.launch()`` to serve it.

    ``interface.fn`` is the classify function (tests call it without launching). With a bundle that
    has evidence maps, it returns ``(scores, overlay)`` for a second output, the map over the image.
    """
    gr = _import_gradio()
    classify: Callable[[Image.Image | None], Any] = (
        evidence_function(detector) if detector.has_evidence else classify_function(detector))

    def classify_image(image: Image.Image | None) -> Any:
        try:
            return classify(image)
        except ImageError as exc:
            raise gr.Error(str(exc)) from exc  # shown in the page instead of a generic "Error"

    variant = f" Model variant: {detector.variant_name}."
    # every label of the bundle: two for the card's fake/real model
    outputs = [gr.Label(num_top_classes=len(detector.labels), label="Deepfake Classification")]
    if detector.has_evidence:
        description += (" The evidence map shows where the decision comes from: red cells lean toward "
                        f"{detector.positive_label}, blue away from it (log-odds per cell, scale below the image).")
        outputs.append(gr.Image(type="pil", label="Evidence map"))
    return gr.Interface(
        fn=classify_image,
        inputs=gr.Image(type="pil", label="Image"),
        outputs=outputs if len(outputs) > 1 else outputs[0],
        title=title,
        description=description + variant,
        flagging_mode="never",
        api_name="classify",
    )
