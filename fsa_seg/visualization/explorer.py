"""The explorer: one image, any classes, any base method, FSA on or off and its top-p / lambda, interactively.

The library part of ``tools/explore.py`` (a local Gradio page, :func:`build_page`); everything except the page
itself is plain torch and testable without a browser, and Gradio is imported only by :func:`build_page`.

What keeps a slider fast: a CLIP model scores each sliding-window crop in two stages
(:meth:`~fsa_seg.clip_model.CLIPSegModel.crop_features`, the backbone, and
:meth:`~fsa_seg.clip_model.CLIPSegModel.scores_from_features`, the last block + FSA + the text head). An
:class:`Explorer` runs the first stage once per image and keeps its :class:`~fsa_seg.clip_model.CropFeatures`
per crop batch; a change of method, FSA, top-p, lambda or even of the classes (only the text embeddings change)
re-runs the second stage on the kept features, through the same windows and stitching as a full run
(:func:`~fsa_seg.sliding_window.slide_inference_shared`), so the result equals a full segmentation of the image
with those settings. :func:`measure_latency` times both.
"""
from __future__ import annotations

import hashlib
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from ..last_block import LAST_BLOCKS, list_base_methods
from ..open_vocab import Prediction
from ..sliding_window import slide_inference_shared
from .drawing import BANNER_RGB, BANNER_TEXT, load_font, palette

#: what every picture made with random weights says
RANDOM_WEIGHTS_BANNER = BANNER_TEXT


@dataclass(frozen=True)
class Settings:
    """What the page's controls choose (the crop features do not depend on any of it)."""

    method: str
    fsa: bool
    top_p: float
    lamda: float


@dataclass
class ImageFeatures:
    """One image as the model sees it: the normalised, resized image ``[3, h, w]``, its original size, and the
    crop features of each crop batch of its sliding window (in the order the windows are scored)."""

    key: str
    rgb: np.ndarray
    image: Tensor
    size: Tuple[int, int]
    batches: List[Tuple[Any, Tensor]] = field(default_factory=list)
    windows: List[list] = field(default_factory=list)  # per batch: (index, (y1, y2, x1, x2), padding) per crop


@dataclass
class Result:
    """A segmentation of the explorer's image at its original size."""

    rgb: np.ndarray
    labels: np.ndarray
    probabilities: Tensor
    classes: List[List[str]]
    settings: Settings
    seconds: float
    backbone_run: bool


def image_key(rgb: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(rgb).tobytes() + str(rgb.shape).encode()).hexdigest()


def model_input(segmentor, rgb: np.ndarray) -> Tuple[Tensor, Tuple[int, int]]:
    """The normalised image ``[3, h, w]`` after the config's test pipeline (its resize) and the segmentor's data
    preprocessor, and the original size: what :func:`fsa_seg.apis.segment_image` hands the model."""
    from ..apis.inference import pipeline_input

    with torch.no_grad():
        batch = segmentor.data_preprocessor(pipeline_input(segmentor.cfg, rgb), False)
    meta = batch["data_samples"][0].metainfo
    image = batch["inputs"][0][:, :meta["img_shape"][0], :meta["img_shape"][1]]
    return image, tuple(int(v) for v in meta["ori_shape"][:2])


class Explorer:
    """Segment one image at a time with settings that change without re-running the backbone.

    ``segmentor``: an :class:`~fsa_seg.plugin.FSASegmentor` (from :func:`fsa_seg.apis.init_segmentor`); its
    model's own settings are the defaults. ``keep_images``: how many images' features are kept (the page keeps
    the current one and the one before).
    """

    def __init__(self, segmentor, keep_images: int = 2) -> None:
        self.segmentor = segmentor
        self.model = segmentor.model
        if not hasattr(self.model, "crop_features") or not hasattr(self.model, "backbone"):
            raise ValueError(f"the explorer needs a CLIP model (FSASegmentor), got {type(self.model).__name__}")
        own = self.model.variant_settings()
        self._own = own
        self.defaults = Settings(own["base_method"], bool(own["fsa"]), float(own["top_p"]), float(own["lamda"]))
        self.keep_images = keep_images
        self._images: Dict[str, ImageFeatures] = {}
        self._states: Dict[Settings, Mapping[str, Any]] = {}
        self.random_weights = bool(segmentor.cfg.model.get("random_weights", False))

    # -- choices --------------------------------------------------------------------------------------
    def methods(self) -> List[str]:
        """The base methods this model can switch to: those that use the proxy features exactly when its own
        does (ProxyCLIP with a proxy; the CLIP-only methods without)."""
        needs = LAST_BLOCKS[self._own["base_method"]].needs_proxy
        return [m for m in list_base_methods() if LAST_BLOCKS[m].needs_proxy == needs]

    @property
    def classes(self) -> List[List[str]]:
        from ..apis.inference import model_classes

        return model_classes(self.segmentor)

    def set_classes(self, text: str) -> List[List[str]]:
        """Parse ``text`` (``"cat,kitten; dog"``, as ``tools/demo.py --classes``) and segment those classes from
        now on; ``ValueError`` (one line) for a bad list. The image features are kept (only the text changes)."""
        from ..apis.inference import parse_classes

        classes = parse_classes(text)
        if classes != self.classes:
            self.model.set_classes(classes)
        return classes

    def state(self, settings: Settings) -> Mapping[str, Any]:
        """The model's variant state for ``settings`` (built once per distinct settings)."""
        if settings not in self._states:
            if settings.method not in self.methods():
                raise ValueError(f"method '{settings.method}': choose one of {', '.join(self.methods())}")
            if not 0.0 < settings.top_p <= 1.0:
                raise ValueError(f"top-p {settings.top_p}: use a value in (0, 1]")
            if settings.lamda < 0:
                raise ValueError(f"lambda {settings.lamda}: use a value >= 0")
            changes = dict(base_method=settings.method, fsa=settings.fsa, top_p=settings.top_p,
                           lamda=settings.lamda)
            if settings.method != self._own["base_method"]:
                changes["base_method_cfg"] = None  # the config's options are its own method's
            self._states[settings] = self.model.variant_state(changes)
        return self._states[settings]

    # -- features and scores ----------------------------------------------------------------------------
    def features(self, rgb: np.ndarray) -> Tuple[ImageFeatures, bool]:
        """The kept features of ``rgb`` (RGB uint8 ``[H, W, 3]``), and whether the backbone ran for them now."""
        key = image_key(rgb)
        if key in self._images:
            return self._images[key], False
        image, size = model_input(self.segmentor, rgb)
        kept = ImageFeatures(key, np.ascontiguousarray(rgb), image, size)
        model = self.model

        def shared(crops: Tensor):
            with model.memory_hint(crops):
                crops = crops.to(model.run_device, model.run_dtype)
                out = (model.crop_features(crops), crops)
            kept.batches.append(out)
            return out

        with torch.no_grad():
            self._slide(kept.image, shared, [], on_chunk=lambda chunk: kept.windows.append(list(chunk)))
        while len(self._images) >= self.keep_images:
            self._images.pop(next(iter(self._images)))
        self._images[key] = kept
        return kept, True

    def _slide(self, image: Tensor, shared, score_fns, on_chunk=None) -> List[Tensor]:
        model = self.model
        out = []
        for group, crop, stride in model._window_groups([image]):
            out += slide_inference_shared(group, shared, score_fns, model.num_queries, crop, stride,
                                          pad_multiple=model.pad_multiple, crop_batch_size=model.crop_batch_size,
                                          on_chunk=on_chunk)
        return out[0]

    def attention_rows(self, kept: ImageFeatures, settings: Settings, point: Tuple[int, int]):
        """FSA's rows (:class:`fsa_seg.internals.CropRows`) of the model-input pixel ``point`` ``(x, y)`` in the
        first window holding it, from the kept features (the last block + FSA of that crop batch only). FSA's
        maps exist only with FSA on: the rows are those of ``settings`` with FSA on."""
        from ..fsa import FSATrace
        from ..internals import CropRows, rows_of_trace, token_of

        px, py = point
        found = [(b, i) for b, chunk in enumerate(kept.windows) for i, (_, win, _) in enumerate(chunk)
                 if win[0] <= py < win[1] and win[2] <= px < win[3]]
        if not found:
            raise ValueError(f"pixel ({px}, {py}) is in no window of the {kept.image.shape[-1]}x"
                             f"{kept.image.shape[-2]} model input")
        b, i = found[0]
        features, crops = kept.batches[b]
        _, win, pad = kept.windows[b][i]

        def locate(grid, patch_tokens):
            token = (patch_tokens.start or 0) + token_of(point, win, pad, tuple(crops.shape[-2:]), grid)
            return torch.tensor([i]), torch.tensor([token])

        trace = FSATrace(locate=locate)
        state = self.state(Settings(settings.method, True, settings.top_p, settings.lamda))
        with torch.no_grad(), self.model.use_variant(state):
            self.model.scores_from_features(features, crops, trace=trace)
        return CropRows(box=tuple(win), padding=tuple(pad), points=[0],
                        rows=rows_of_trace(trace, torch.tensor([0]), i))

    def query_scores(self, kept: ImageFeatures, settings: Settings) -> Tensor:
        """Query scores ``[Q, h, w]`` of the resized image under ``settings``, from the kept crop features
        (the last block, FSA and the text head only)."""
        model, state = self.model, self.state(settings)
        batches = iter(kept.batches)

        def score(shared_out) -> Tensor:
            features, crops = shared_out
            with model.use_variant(state), model.memory_hint(crops):
                return model.scores_from_features(features, crops)

        with torch.no_grad():
            (scores,) = self._slide(kept.image, lambda crops: next(batches), [score])
        return scores

    def predict(self, kept: ImageFeatures, settings: Settings) -> Prediction:
        """Probabilities and labels at the original size under ``settings`` (as the segmentor's ``predict``)."""
        scores = self.query_scores(kept, settings)
        with torch.no_grad(), self.model.use_variant(self.state(settings)):
            return self.model.predict_scores(self.model.scores_at(scores, kept.image, kept.size))

    def segment(self, rgb: np.ndarray, settings: Optional[Settings] = None) -> Result:
        """Segment ``rgb`` under ``settings`` (default: the model's own); the backbone runs only for a new image."""
        settings = settings or self.defaults
        self.state(settings)  # a bad setting fails before the backbone runs
        start = time.perf_counter()
        kept, ran = self.features(rgb)
        pred = self.predict(kept, settings)
        return Result(kept.rgb, pred.labels.cpu().numpy().astype(np.int64), pred.probabilities.cpu(),
                      self.classes, settings, time.perf_counter() - start, ran)


# -- the pixel panel ---------------------------------------------------------------------------------------
def pixel_probabilities(result: Result, x: int, y: int) -> List[Tuple[str, float]]:
    """The clicked pixel's class probabilities, highest first (class named by its first synonym)."""
    h, w = result.labels.shape
    if not (0 <= x < w and 0 <= y < h):
        raise ValueError(f"pixel ({x}, {y}) is outside the {w}x{h} image")
    probs = result.probabilities[:, y, x].float().tolist()
    return sorted(((c[0], p) for c, p in zip(result.classes, probs)), key=lambda t: -t[1])


# -- pictures ------------------------------------------------------------------------------------------------
def draw_banner(image, text: str = RANDOM_WEIGHTS_BANNER, extend: bool = False):
    """A red strip with ``text`` across the top of a PIL image (a new image): over the image, or above it
    (``extend``; the image moves down)."""
    from PIL import Image, ImageDraw

    size = max(10, min(image.size) // 24) if not extend else 13
    height = size + size // 2 + 4
    if extend:
        out = Image.new("RGB", (image.size[0], image.size[1] + height + 1), (255, 255, 255))
        out.paste(image.convert("RGB"), (0, height + 1))
    else:
        out = image.convert("RGB").copy()
    font = load_font(size)
    draw = ImageDraw.Draw(out)
    if draw.textlength(text, font=font) > out.size[0] - 8:  # a narrow picture: the short form
        text = text.split(":")[0]
    draw.rectangle([0, 0, out.size[0], height], fill=BANNER_RGB)
    draw.text((4, 2 + size // 4), text, fill=(255, 255, 255), font=font)
    return out


def overlay(result: Result, opacity: float = 0.5, point: Optional[Tuple[int, int]] = None,
            banner: bool = False) -> np.ndarray:
    """The image with its class colours blended in and a legend (class, pixel share); a cross at ``point``;
    the random-weights banner when ``banner``. RGB uint8 ``[H, W, 3]``."""
    from PIL import Image, ImageDraw

    colors = palette(len(result.classes))
    # the colour's weight follows the pixel's top class probability (from 1/K to 1), so a settings change that
    # moves the probabilities shows even where no label changes
    k = len(result.classes)
    top = result.probabilities.float().max(dim=0).values.numpy()
    confidence = np.clip((top - 1.0 / k) / max(1e-6, 1.0 - 1.0 / k), 0.0, 1.0) if k > 1 else np.ones_like(top)
    alpha = (opacity * (0.4 + 0.6 * confidence))[:, :, None]
    blend = (result.rgb * (1 - alpha) + colors[result.labels] * alpha).round().astype(np.uint8)
    img = Image.fromarray(blend)
    draw = ImageDraw.Draw(img)
    h, w = result.labels.shape
    size = max(10, min(h, w) // 30)
    font = load_font(size)
    counts = np.bincount(result.labels.ravel(), minlength=len(result.classes))
    rows = [f"{c[0]} ({100.0 * counts[k] / result.labels.size:.1f}%)" for k, c in enumerate(result.classes)]
    pad, line = max(2, size // 3), size + max(2, size // 3)
    top0 = (size + size // 2 + 6) if banner else 0
    text_w = max(int(draw.textlength(t, font=font)) for t in rows)
    draw.rectangle([0, top0, 3 * pad + size + text_w, top0 + 2 * pad + line * len(rows)], fill=(255, 255, 255))
    for k, text in enumerate(rows):
        top = top0 + pad + k * line
        draw.rectangle([pad, top, pad + size, top + size], fill=tuple(int(c) for c in colors[k]), outline=(0, 0, 0))
        draw.text((2 * pad + size, top), text, fill=(0, 0, 0), font=font)
    if point is not None:
        x, y = point
        r = max(4, min(h, w) // 40)
        draw.line([x - r, y, x + r, y], fill=(255, 255, 255), width=3)
        draw.line([x, y - r, x, y + r], fill=(255, 255, 255), width=3)
        draw.line([x - r, y, x + r, y], fill=(0, 0, 0), width=1)
        draw.line([x, y - r, x, y + r], fill=(0, 0, 0), width=1)
    if banner:
        img = draw_banner(img)
    return np.asarray(img)


def probability_bars(rows: Sequence[Tuple[str, float]], width: int = 320, banner: bool = False) -> np.ndarray:
    """A bar chart of ``(class, probability)`` rows (RGB uint8), for the clicked pixel."""
    from PIL import Image, ImageDraw

    size = 14
    line = size + 8
    top0 = 0
    img = Image.new("RGB", (width, top0 + 8 + line * max(1, len(rows))), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    font = load_font(size)
    colors = {}
    for k, (name, p) in enumerate(rows):
        top = top0 + 4 + k * line
        bar = int(round(p * (width - 130)))
        draw.rectangle([120, top, 120 + max(bar, 1), top + size], fill=colors.get(name, (31, 119, 180)))
        draw.text((4, top), name[:16], fill=(0, 0, 0), font=font)
        draw.text((124 + bar, top), f"{p:.2f}", fill=(0, 0, 0), font=font)
    if banner:
        img = draw_banner(img, extend=True)
    return np.asarray(img)


# -- latency --------------------------------------------------------------------------------------------
@dataclass
class Latency:
    full_s: float          # fsa_seg.apis.segment_image of the image (pipeline, backbone, last block, FSA)
    slider_s: float        # the explorer after a slider move (last block, FSA, text head, resize)
    size: Tuple[int, int]  # the image's (height, width)
    crops: int

    @property
    def ratio(self) -> float:
        return self.full_s / self.slider_s if self.slider_s > 0 else math.inf

    def line(self) -> str:
        h, w = self.size
        return (f"latency at {w}x{h} ({self.crops} crop(s)): full segmentation {self.full_s * 1000:.0f} ms, "
                f"slider (last block + FSA only) {self.slider_s * 1000:.0f} ms: {self.ratio:.1f}x faster")


def measure_latency(explorer: Explorer, rgb: np.ndarray, repeats: int = 3) -> Latency:
    """Median wall time of a full segmentation of ``rgb`` (:func:`fsa_seg.apis.segment_image`, with the model's
    settings) and of the explorer's answer to a top-p slider move on the same image (the features kept; one
    warm-up each)."""
    from ..apis.inference import segment_image

    def timed(fn) -> float:
        fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    full = timed(lambda: segment_image(explorer.segmentor, rgb))
    kept, _ = explorer.features(rgb)
    base = explorer.defaults
    moves = [Settings(base.method, True, p, base.lamda) for p in (0.3, 0.35, 0.4, 0.5)]
    step = iter(range(10 ** 9))
    slider = timed(lambda: explorer.predict(kept, moves[next(step) % len(moves)]))
    return Latency(full, slider, tuple(rgb.shape[:2]), sum(b[1].shape[0] for b in kept.batches))


# -- the page ---------------------------------------------------------------------------------------------
def classes_text(classes: Sequence[Sequence[str]]) -> str:
    """``[['cat', 'kitten'], ['dog']]`` -> ``"cat,kitten; dog"`` (what :func:`~fsa_seg.apis.parse_classes` reads)."""
    return "; ".join(",".join(words) for words in classes)


def sample_images(folder: Optional[str]) -> Dict[str, str]:
    """The images of ``folder`` by file name (none when it is None or missing)."""
    import os

    if not folder or not os.path.isdir(folder):
        return {}
    names = sorted(n for n in os.listdir(folder)
                   if n.lower().endswith((".jpg", ".jpeg", ".png", ".bmp", ".webp")))
    return {n: os.path.join(folder, n) for n in names}


def one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


class ExplorerApp:
    """What the page does, without the page: each handler takes the controls' values and returns what the page
    shows, with a one-line ``status`` that starts with ``error:`` when something is wrong (never a traceback).

    ``explorer``: an :class:`Explorer`, or None with ``error`` (e.g. a missing checkpoint: every handler then
    answers with that line). The app keeps one current image and one result (a local, single-user page).
    """

    def __init__(self, explorer: Optional[Explorer], error: Optional[str] = None,
                 samples: Optional[Mapping[str, str]] = None) -> None:
        if explorer is None and not error:
            raise ValueError("ExplorerApp needs an explorer or the error that prevented building one")
        self.explorer = explorer
        self.error = error
        self.samples = dict(samples or {})
        self.rgb: Optional[np.ndarray] = None
        self.result: Optional[Result] = None
        self.point: Optional[Tuple[int, int]] = None

    @property
    def banner(self) -> bool:
        return bool(self.explorer is not None and self.explorer.random_weights)

    def default_controls(self) -> Dict[str, Any]:
        if self.explorer is None:
            return dict(classes="", method=None, methods=[], fsa=True, top_p=0.45, lamda=3.0)
        d = self.explorer.defaults
        return dict(classes=classes_text(self.explorer.classes), method=d.method, methods=self.explorer.methods(),
                    fsa=d.fsa, top_p=d.top_p, lamda=d.lamda)

    def load_sample(self, name: Optional[str]) -> Optional[np.ndarray]:
        from ..apis.inference import read_image

        if not name or name not in self.samples:
            return None
        return read_image(self.samples[name])

    def update(self, rgb: Optional[np.ndarray], classes: str, method: str, fsa: bool, top_p: float,
               lamda: float):
        """Segment ``rgb`` (RGB uint8, or None: the current image) with these controls. Returns the overlay, the
        clicked pixel's maps and probabilities (refreshed for the new settings; None before a click or for a new
        image) and the one-line status."""
        if self.explorer is None:
            return None, None, None, f"error: {self.error}"
        if rgb is not None:
            rgb = np.asarray(rgb)
            if rgb.ndim == 2:
                rgb = np.repeat(rgb[:, :, None], 3, axis=2)
            rgb = np.ascontiguousarray(rgb[:, :, :3]).astype(np.uint8)
            if self.rgb is None or rgb.shape != self.rgb.shape or not np.array_equal(rgb, self.rgb):
                self.rgb, self.point = rgb, None
        if self.rgb is None:
            return None, None, None, "pick a sample photo or upload an image"
        try:
            self.explorer.set_classes(classes)
            settings = Settings(str(method), bool(fsa), float(top_p), float(lamda))
            self.result = self.explorer.segment(self.rgb, settings)
        except Exception as err:  # noqa: BLE001 - one line in the page, never a traceback
            message = one_line(err)
            if message.startswith(("the class list", "class ")):
                message = f"classes: {message}"
            return None, None, None, f"error: {message}"
        r = self.result
        h, w = r.labels.shape
        how = "backbone + last block" if r.backbone_run else "kept features: last block + FSA only"
        status = f"segmented {w}x{h}, {len(r.classes)} classes, in {r.seconds * 1000:.0f} ms ({how})"
        if self.point is None:
            return overlay(r, banner=self.banner), None, None, status + "; click a pixel to see its maps"
        seg, maps, bars, pixel = self.click(*self.point)
        return seg, maps, bars, (pixel if pixel.startswith("error") else f"{status}; {pixel}")

    def click(self, x: int, y: int) -> Tuple[Optional[np.ndarray], Optional[np.ndarray], Optional[np.ndarray], str]:
        """The clicked pixel ``(x, y)`` of the current result: the overlay with a cross there, its attention maps
        (None where they cannot be drawn), its class probabilities, and the status."""
        if self.explorer is None:
            return None, None, None, f"error: {self.error}"
        if self.result is None:
            return None, None, None, "segment an image first"
        try:
            x, y = int(x), int(y)
            probs = pixel_probabilities(self.result, x, y)
            maps, note = attention_panel(self.explorer, self.result, (x, y), banner=self.banner)
        except Exception as err:  # noqa: BLE001 - one line in the page
            return None, None, None, f"error: {one_line(err)}"
        self.point = (x, y)
        top = ", ".join(f"{name} {p:.2f}" for name, p in probs[:3])
        status = f"pixel (x={x}, y={y}): {top}" + (f"; {note}" if note else "")
        return (overlay(self.result, point=(x, y), banner=self.banner), maps,
                probability_bars(probs, banner=self.banner), status)


def attention_panel(explorer: Explorer, result: Result, point: Tuple[int, int], banner: bool = False
                    ) -> Tuple[Optional[np.ndarray], str]:
    """FSA's attention rows of the pixel ``point`` ``(x, y)`` of ``result`` drawn over the window of the model's
    input that holds it: A0, the isolated affinity, the kept set, the sharpened A_fb and the ensembled attention
    (the rows of ``fsa_seg.internals``, from the kept crop features: no backbone run), and a note (the kept
    share of its row). ``(None, note)`` when the internals API is not installed."""
    try:
        import fsa_seg.internals  # noqa: F401
    except ImportError:
        return None, "attention maps: fsa_seg.internals is not available"
    from PIL import Image

    kept, _ = explorer.features(result.rgb)
    model = explorer.model
    mean = torch.tensor(model.pixel_mean, device=kept.image.device).view(3, 1, 1)
    std = torch.tensor(model.pixel_std, device=kept.image.device).view(3, 1, 1)
    rgb = (kept.image.float() * std + mean).clamp(0, 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    (H, W), (h, w) = result.labels.shape, rgb.shape[:2]
    px = min(w - 1, int(point[0] * w / W))
    py = min(h - 1, int(point[1] * h / H))
    crop = explorer.attention_rows(kept, result.settings, (px, py))
    y1, y2, x1, x2 = crop.box
    window = rgb[y1:y2, x1:x2]
    panels = []
    for name, title in (("base", "A0 (base)"), ("isolated", "isolated affinity"), ("kept", "kept by top-p"),
                        ("sharpened", "A_fb (sharpened)"), ("ensembled", "ensembled")):
        grid = crop.rows.maps(name)[0].float()
        panels.append(_heat_panel(window, grid, crop.padding, (px - x1, py - y1), title))
    share = float(crop.rows.kept_share.reshape(-1)[int(crop.rows.query_tokens[0])])
    width = sum(p.size[0] for p in panels) + 4 * (len(panels) - 1)
    out = Image.new("RGB", (width, max(p.size[1] for p in panels)), (255, 255, 255))
    left = 0
    for p in panels:
        out.paste(p, (left, 0))
        left += p.size[0] + 4
    if banner:
        out = draw_banner(out, extend=True)
    fsa_note = "" if result.settings.fsa else " (FSA's maps with FSA on)"
    return np.asarray(out), f"kept share of its row {share:.2f}{fsa_note}"


def _heat_panel(window: np.ndarray, grid: Tensor, padding: Tuple[int, int, int, int], point: Tuple[int, int],
                title: str):
    """``grid`` ``[h, w]`` (covering the padded window) as a heat map over the window, a cross at ``point``."""
    import matplotlib
    from PIL import Image, ImageDraw

    wh, ww = window.shape[:2]
    left, right, top, bottom = padding
    g = grid - grid.min()
    g = g / g.max() if float(g.max()) > 0 else g
    full = torch.nn.functional.interpolate(g[None, None], size=(wh + top + bottom, ww + left + right),
                                           mode="nearest")[0, 0][top:top + wh, left:left + ww].numpy()
    heat = (matplotlib.colormaps["inferno"](full)[:, :, :3] * 255).astype(np.float32)
    img = Image.fromarray((0.4 * window + 0.6 * heat).round().astype(np.uint8))
    scale = 224 / max(wh, ww)
    img = img.resize((max(1, int(ww * scale)), max(1, int(wh * scale))), Image.NEAREST)
    size = 13
    canvas = Image.new("RGB", (img.size[0], img.size[1] + size + 6), (255, 255, 255))
    canvas.paste(img, (0, size + 6))
    draw = ImageDraw.Draw(canvas)
    draw.text((2, 2), title, fill=(0, 0, 0), font=load_font(size))
    x, y = int(point[0] * scale), int(point[1] * scale) + size + 6
    draw.ellipse([x - 4, y - 4, x + 4, y + 4], outline=(0, 255, 255), width=2)
    return canvas


def build_page(app: ExplorerApp, title: str = "fsa-seg explorer"):
    """The Gradio page over ``app`` (``gradio.Blocks``; ``.launch()`` serves it). Needs gradio
    (``pip install "fsa-seg[explore]"``)."""
    import gradio as gr

    c = app.default_controls()
    with gr.Blocks(title=title, analytics_enabled=False) as page:
        gr.Markdown(f"## {title}\nPick a sample photo or upload an image, type classes (`;` between classes, `,` "
                    f"between synonyms), choose the method, FSA and its top-p / lambda, then click a pixel of the "
                    f"segmentation. Moving a slider re-runs only the last block and FSA on the kept crop features."
                    + (f"\n\n**{RANDOM_WEIGHTS_BANNER}** (model.random_weights=True)" if app.banner else ""))
        status = gr.Markdown(f"error: {app.error}" if app.error else "pick a sample photo or upload an image",
                             elem_id="status")
        with gr.Row():
            with gr.Column(scale=1):
                sample = gr.Dropdown(choices=list(app.samples), value=None, label="sample photo", elem_id="sample")
                image = gr.Image(type="numpy", image_mode="RGB", label="image", sources=["upload"],
                                 elem_id="input_image")
                classes = gr.Textbox(value=c["classes"], label="classes (press Enter)", elem_id="classes")
                method = gr.Dropdown(choices=c["methods"], value=c["method"], label="base method", elem_id="method")
                fsa = gr.Checkbox(value=c["fsa"], label="FSA", elem_id="fsa")
                top_p = gr.Slider(0.05, 1.0, value=c["top_p"], step=0.05, label="top-p", elem_id="top_p")
                lamda = gr.Slider(0.0, 10.0, value=c["lamda"], step=0.5, label="lambda", elem_id="lamda")
            with gr.Column(scale=2):
                segmentation = gr.Image(label="segmentation (click a pixel)", interactive=False,
                                        elem_id="segmentation")
                gr.Markdown("clicked pixel: FSA's attention rows on its window (A0, isolated affinity, kept by "
                            "top-p, A_fb, ensembled) and its class probabilities")
                maps = gr.Image(show_label=False, interactive=False, elem_id="pixel_maps")
                bars = gr.Image(show_label=False, interactive=False, elem_id="pixel_probs")
        controls = [classes, method, fsa, top_p, lamda]

        def on_sample(name):
            try:
                return app.load_sample(name)
            except ValueError:
                return None

        def on_image(rgb, *values):
            if rgb is None:
                return None, None, None, "pick a sample photo or upload an image"
            return app.update(rgb, *values)

        def on_controls(*values):
            return app.update(None, *values)

        def on_click(evt):
            x, y = evt.index[:2]
            return app.click(x, y)

        # gradio hands the click's position to a parameter annotated with its class (this module's annotations
        # are strings, and gradio is imported here only)
        on_click.__annotations__ = {"evt": gr.SelectData}

        sample.change(on_sample, sample, image)
        outputs = [segmentation, maps, bars, status]
        image.change(on_image, [image] + controls, outputs, trigger_mode="always_last")
        classes.submit(on_controls, controls, outputs, trigger_mode="always_last")
        for control in (method, fsa, top_p, lamda):
            control.change(on_controls, controls, outputs, trigger_mode="always_last")
        segmentation.select(on_click, None, outputs)
    return page
