"""``Detector``: the public facade that ties bundle, preprocessing and session together."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort

from .bundle import CONFIG_NAME, PREPROCESSOR_NAME, Bundle
from .decision import ScoreRule, decisions
from .errors import BundleMismatchError, ImageError, ModelOutputError, UnsupportedBundleError
from .evidence import EVIDENCE_OUTPUT, grid_shape, manipulation_margins, require_evidence_output
from .image_decoder import ImageDecoder, Placement
from .images import DEFAULT_MAX_PIXELS, ImageInput, describe_source, is_single_input
from .labels import softmax
from .manifest import Variant
from .preprocess import draft_size
from .results import BatchError, Failure, Prediction
from .session import (
    INPUT_NAME,
    ORT_ERRORS,
    OUTPUT_NAME,
    create_session,
    run_logits,
    run_outputs,
)
from .variant_choice import AUTO, Choice, Machine, choose_variant

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "Detector", "ImageDecoder"]


def _inputs(images: ImageInput | Iterable[ImageInput]) -> Iterable[ImageInput]:
    """One image -> [image]; a sequence/iterator -> itself.

    Anything else (None, a number, ...) is one input of an unsupported type, so
    it gets an ``UnsupportedInputError`` like any other bad input instead of a
    bare TypeError that would take the whole batch down.
    """
    if is_single_input(images) or not isinstance(images, Iterable):
        return [images]  # type: ignore[list-item]
    return images  # type: ignore[return-value]


def _as_list(images: ImageInput | Iterable[ImageInput]) -> list[ImageInput]:
    return list(_inputs(images))


class Detector:
    """A loaded bundle variant, ready to classify images. Thread-safe.

    >>> det = Detector.load("bundle/")                      # doctest: +SKIP
    >>> det.predict(["a.jpg", "b.png"])[0].label            # doctest: +SKIP
    'fake'
    """

    def __init__(
        self,
        bundle: Bundle,
        variant_name: str,
        variant: Variant,
        session: ort.InferenceSession,  # or an OpenVINOSession (same three methods)
        *,
        threshold: float | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        choice: Choice | None = None,
        fast_decode: bool = False,
    ) -> None:
        self.bundle = bundle
        self.variant_name = variant_name
        self.variant = variant
        self.session = session
        self.threshold = threshold if threshold is not None else bundle.manifest.decision.threshold
        self.max_pixels = max_pixels
        self.choice = choice  # why this variant, when it was chosen by variant="auto"
        #: The smallest (width, height) a JPEG may be decoded at (None: exact decoding), see ``load_rgb_scaled``.
        self.draft_size = draft_size(bundle.preprocess) if fast_decode else None
        self._check_io()

    @classmethod
    def load(
        cls,
        bundle_dir: str | Path,
        variant: str | None = None,
        *,
        threads: int | None = None,
        providers: Sequence[str] | None = None,
        verify: bool = True,
        threshold: float | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        fast_decode: bool = False,
    ) -> Detector:
        """Open ``bundle_dir`` and create a session for ``variant`` (the manifest's default if None).

        ``variant="auto"`` picks the fastest variant that passed the fidelity gate, has its engine
        installed and suits this machine (see ``variant_choice``); ``detector.choice`` says why.
        ``verify`` checks the model file's sha256 against the manifest.
        ``threshold`` overrides the bundle's decision threshold on the manipulation score (``rule``).
        ``max_pixels`` refuses larger images before decoding (None disables the check).
        ``fast_decode`` decodes large JPEGs at a reduced DCT scale (``PIL.Image.draft``), no smaller
        than ``FAST_DECODE_FACTOR`` times the model input: faster and lighter on huge photos, but the
        tensor is no longer bit-exact with transformers' preprocessing. Other formats are unaffected.
        """
        bundle = Bundle.open(bundle_dir)
        choice = choose_variant(bundle.manifest, Machine.detect(providers)) if variant == AUTO else None
        if choice is not None:
            variant, providers = choice.variant, providers or choice.providers
        name, spec = bundle.variant(variant)
        session = create_session(bundle.model_path(spec, verify=verify), threads=threads, providers=providers,
                                 backend=spec.backend, backend_options=spec.backend_options,
                                 # a verified file is the manifest's model: its optimized copy may be reused
                                 cache_key=spec.sha256 if verify else None)
        return cls(bundle, name, spec, session, threshold=threshold, max_pixels=max_pixels, choice=choice,
                   fast_decode=fast_decode)

    # -- properties -------------------------------------------------------
    @property
    def labels(self) -> tuple[str, ...]:
        return self.bundle.labels

    @property
    def positive_label(self) -> str | None:
        return self.bundle.manifest.decision.positive_label

    @property
    def rule(self) -> ScoreRule | None:
        """How the manipulation score (``Prediction.score``) is computed; None for an old bundle without one."""
        return self.bundle.rule

    def _check_io(self) -> None:
        """Refuse, at load time, a model whose input/output disagree with the bundle's files."""
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name: o for o in self.session.get_outputs()}
        model = self.bundle.root / self.variant.file
        preprocessor = self.bundle.root / PREPROCESSOR_NAME
        if INPUT_NAME not in inputs or OUTPUT_NAME not in outputs:
            raise BundleMismatchError(
                f"{model}: expected input {INPUT_NAME!r} and output {OUTPUT_NAME!r}, "
                f"found inputs {sorted(inputs)} and outputs {sorted(outputs)}"
            )
        if inputs[INPUT_NAME].type != "tensor(float)":
            raise BundleMismatchError(
                f"{model}: input {INPUT_NAME!r} is {inputs[INPUT_NAME].type}, expected tensor(float)"
            )
        cfg = self.bundle.preprocess
        if not cfg.do_resize:
            # Without resizing every image would have its own size, and the model
            # takes one fixed size: most inputs could never be classified.
            raise UnsupportedBundleError(
                f"{preprocessor}: do_resize is false, but the model needs a fixed {cfg.height}x{cfg.width} input"
            )
        shape, out_shape = inputs[INPUT_NAME].shape, outputs[OUTPUT_NAME].shape
        if len(shape) != 4 or len(out_shape) != 2:
            raise BundleMismatchError(
                f"{model}: expected a rank-4 {INPUT_NAME!r} (NCHW) and rank-2 {OUTPUT_NAME!r}, "
                f"got {shape} and {out_shape}"
            )
        if isinstance(shape[1], int) and shape[1] != 3:
            raise BundleMismatchError(f"{model}: input {INPUT_NAME!r} has {shape[1]} channels, expected 3 (RGB)")
        static = all(isinstance(d, int) for d in (shape[2], shape[3], out_shape[1]))
        if static:
            size, width = (shape[2], shape[3]), out_shape[1]
        else:
            # A model exported with dynamic height/width or label axes does not
            # say what it accepts: run one blank image now rather than fail later.
            probe = np.zeros((1, 3, cfg.height, cfg.width), np.float32)
            try:
                logits = self.session.run([OUTPUT_NAME], {INPUT_NAME: probe})[0]
            except ORT_ERRORS as exc:
                raise BundleMismatchError(
                    f"{preprocessor}: size {cfg.height}x{cfg.width} is not accepted by {model} "
                    f"(input {shape}; {type(exc).__name__}: {exc})"
                ) from exc
            size, width = (cfg.height, cfg.width), logits.shape[-1]
        if size != (cfg.height, cfg.width):
            raise BundleMismatchError(
                f"{preprocessor}: size {cfg.height}x{cfg.width} does not match the model input {shape} of {model}"
            )
        if width != len(self.labels):
            raise BundleMismatchError(
                f"{self.bundle.root / CONFIG_NAME}: id2label has {len(self.labels)} labels "
                f"but {model} outputs {width} logits"
            )

    # -- the pipeline: decode -> logits -> results ------------------------------
    def decode(self, image: ImageInput, index: int = 0, *, name: str | None = None) -> np.ndarray:
        """One input -> the float32 CHW tensor the model receives (RGB, bit-exact preprocessing
        unless this detector was loaded with ``fast_decode``).

        Applies this detector's pixel limit; raises an ``ImageError`` naming the input:
        ``name`` if given (an upload's file name, a video frame), else its path or ``<bytes #index>``.
        """
        return self.image_decoder(image, name=name or describe_source(image, index))

    def decode_placed(self, image: ImageInput, index: int = 0, *, name: str | None = None
                      ) -> tuple[np.ndarray, Placement]:
        """:meth:`decode`, and where the tensor lies on the original (see ``ImageDecoder.placed``)."""
        return self.image_decoder.placed(image, name=name or describe_source(image, index))

    @property
    def image_decoder(self) -> ImageDecoder:
        """This detector's :meth:`decode` without the model, to run in another process."""
        return ImageDecoder(self.bundle.preprocess, self.max_pixels, self.draft_size)

    def preprocess(self, images: ImageInput | Iterable[ImageInput]) -> np.ndarray:
        """float32 NCHW of every input (see :meth:`decode`). Raises ``ImageError`` on a bad input."""
        tensors = [self.decode(img, i) for i, img in enumerate(_as_list(images))]
        cfg = self.bundle.preprocess
        if not tensors:
            return np.zeros((0, 3, cfg.height, cfg.width), np.float32)
        return np.stack(tensors)

    def logits(self, pixel_values: np.ndarray) -> np.ndarray:
        """Run the model on an NCHW batch (one image per run unless the variant is batch-invariant)."""
        if pixel_values.shape[0] == 0:
            return np.zeros((0, len(self.labels)), np.float32)
        return run_logits(self.session, pixel_values, per_image=not self.variant.batch_invariant)

    @property
    def has_evidence(self) -> bool:
        """Whether this variant's file has the ``patch_logits`` output (bundles exported with evidence maps)."""
        return any(o.name == EVIDENCE_OUTPUT for o in self.session.get_outputs())

    def require_evidence(self) -> str:
        """The label evidence maps lean toward; raises ``UnsupportedBundleError`` naming the re-export
        when this bundle cannot give them."""
        require_evidence_output([o.name for o in self.session.get_outputs()], str(self.bundle.root / self.variant.file))
        rule = self.bundle.require_rule("an evidence map")
        return rule.positive_label if rule.positive_label is not None else f"not {rule.real_label}"

    def logits_and_evidence(self, pixel_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Logits and the margin maps ``[N, grid_h, grid_w]`` toward the positive label (see ``evidence``)."""
        self.require_evidence()
        rule = self.bundle.require_rule("an evidence map")
        cfg = self.bundle.preprocess
        if pixel_values.shape[0] == 0:
            return np.zeros((0, len(self.labels)), np.float32), np.zeros((0, 0, 0), np.float32)
        logits, patches = run_outputs(self.session, pixel_values, (OUTPUT_NAME, EVIDENCE_OUTPUT),
                                      per_image=not self.variant.batch_invariant)
        rows, cols = grid_shape(patches.shape[1], cfg.height, cfg.width)
        maps = manipulation_margins(patches, self.labels, rule.positive_label, rule.real_label)
        return logits, maps.reshape(len(patches), rows, cols)

    def results(self, sources: Sequence[str], logits: np.ndarray, evidence: np.ndarray | None = None,
                placements: Sequence[Placement] | None = None) -> list[Prediction | Failure]:
        """Softmax and the decision rule over a batch of logits, one result per source.

        A row with a non-finite logit (a damaged model) becomes a ``Failure``:
        NaN is never reported as a score. ``evidence`` (maps from :meth:`logits_and_evidence`) and
        ``placements`` (from :meth:`decode_placed`) are attached to each ``Prediction`` when given.
        """
        finite = np.isfinite(logits).all(axis=-1)
        probs = softmax(np.where(finite[:, None], logits, 0.0))
        rule = self.rule
        ids = decisions(probs, rule, self.threshold)
        manipulation = rule.scores(probs) if rule is not None else [None] * len(probs)
        out: list[Prediction | Failure] = []
        for n, (src, p, i, s, ok) in enumerate(zip(sources, probs, ids, manipulation, finite, strict=True)):
            if not ok:
                out.append(Failure(source=src, error=ModelOutputError(src, "the model returned non-finite scores "
                                                                      "(NaN or inf); its file may be damaged")))
                continue
            extra = {} if evidence is None else {
                "evidence": evidence[n], "image_size": placements[n][0] if placements else None,
                "orientation": placements[n][1] if placements else 1}
            out.append(Prediction(source=src, label=self.labels[int(i)],
                                  scores=dict(zip(self.labels, map(float, p), strict=True)),
                                  score=None if s is None else float(s), **extra))
        return out

    def _batch_results(self, sources: list[str], tensors: list[np.ndarray], placements: list[Placement] | None
                       ) -> list[Prediction | Failure]:
        if not tensors:
            return []
        if placements is None:  # no evidence asked for: the plain run, fetching the logits alone
            return self.results(sources, self.logits(np.stack(tensors)))
        logits, maps = self.logits_and_evidence(np.stack(tensors))
        return self.results(sources, logits, maps, placements)

    def iter_predict(
        self, images: ImageInput | Iterable[ImageInput], *, batch_size: int = 8, evidence: bool = False
    ) -> Iterator[Prediction | Failure]:
        """Yield one result per input, in input order; a bad input yields a ``Failure``.

        At most ``batch_size`` decoded images are held in memory at once. ``evidence``: see :meth:`predict`.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if evidence:
            self.require_evidence()  # an old bundle fails here, before any input is read
        items = _inputs(images)
        pending: list[Prediction | Failure | None] = []  # None marks a slot awaiting the model
        sources: list[str] = []
        tensors: list[np.ndarray] = []
        placements: list[Placement] | None = [] if evidence else None

        def flush() -> Iterator[Prediction | Failure]:
            done = iter(self._batch_results(sources, tensors, placements))
            for slot in pending:
                yield slot if slot is not None else next(done)
            for held in (pending, sources, tensors, placements or []):
                held.clear()

        for index, image in enumerate(items):
            name = describe_source(image, index)
            try:
                tensor, placement = self.decode_placed(image, index)
            except ImageError as exc:
                pending.append(Failure(source=name, error=exc))
                continue
            pending.append(None)
            sources.append(name)
            tensors.append(tensor)
            if placements is not None:
                placements.append(placement)
            if len(tensors) >= batch_size:
                yield from flush()
        yield from flush()

    def predict(
        self,
        images: ImageInput | Iterable[ImageInput],
        *,
        batch_size: int = 8,
        on_error: Literal["raise", "return"] = "raise",
        evidence: bool = False,
    ) -> list[Prediction | Failure]:
        """Classify every input; results are in input order.

        ``evidence=True`` also gives each ``Prediction`` its evidence map (``prediction.evidence``,
        ``prediction.hotspots(k)``, ``evidence.evidence_overlay``); a bundle exported without the
        ``patch_logits`` output raises ``UnsupportedBundleError`` naming the re-export.

        A bad input never stops the others. With ``on_error="raise"`` (default)
        any failure raises :class:`BatchError` *after* all inputs were processed;
        its ``results`` holds every ``Prediction`` and ``Failure``. With
        ``on_error="return"`` those ``Failure`` entries are returned in the list.
        """
        if on_error not in ("raise", "return"):
            raise ValueError(f"on_error must be 'raise' or 'return', got {on_error!r}")
        results = list(self.iter_predict(images, batch_size=batch_size, evidence=evidence))
        if on_error == "raise" and any(isinstance(r, Failure) for r in results):
            raise BatchError(results)
        return results

    def predict_one(self, image: ImageInput, *, evidence: bool = False) -> Prediction:
        """Classify a single image; a bad input raises its ``ImageError``."""
        # a list is one (unsupported) input here
        result = next(self.iter_predict([image], batch_size=1, evidence=evidence))
        if isinstance(result, Failure):
            raise result.error
        return result
