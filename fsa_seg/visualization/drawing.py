"""Drawing: class palette, colour blends, label panels, the changed-pixels panel, legends, the random-weights
banner and attention heat maps. Plain numpy/PIL for per-image panels; matplotlib (Agg) for the figures.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

#: the text of the banner on every figure made with random weights
BANNER_TEXT = "random weights: not a real result"
#: the banner's background colour (RGB); a test finds the banner by these exact pixels
BANNER_RGB = (200, 0, 0)
#: colour of pixels without a class (e.g. the ignore label 255 of a ground truth)
IGNORE_RGB = (0, 0, 0)


def palette(n: int) -> np.ndarray:
    """``n`` distinct RGB colours (uint8 ``[n, 3]``)."""
    import matplotlib

    if n <= 10:
        colors = matplotlib.colormaps["tab10"](np.arange(n))[:, :3]
    elif n <= 20:
        colors = matplotlib.colormaps["tab20"](np.arange(n))[:, :3]
    else:
        colors = matplotlib.colormaps["hsv"](np.linspace(0, 1, n, endpoint=False))[:, :3]
    return (colors * 255).round().astype(np.uint8)


def colorize(labels: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """Class colours of a label map ``[H, W]`` (RGB uint8 ``[H, W, 3]``); ids outside the palette are
    :data:`IGNORE_RGB`."""
    labels = np.asarray(labels)
    out = np.empty(labels.shape + (3,), dtype=np.uint8)
    out[:] = IGNORE_RGB
    valid = (labels >= 0) & (labels < len(colors))
    out[valid] = colors[labels[valid]]
    return out


def blend(rgb: np.ndarray, labels: np.ndarray, colors: np.ndarray, opacity: float = 0.5) -> np.ndarray:
    """The image with the class colours blended in (pixels outside the palette keep the image)."""
    colored = colorize(labels, colors).astype(np.float32)
    out = rgb.astype(np.float32) * (1 - opacity) + colored * opacity
    valid = (np.asarray(labels) >= 0) & (np.asarray(labels) < len(colors))
    out[~valid] = rgb[~valid]
    return out.round().astype(np.uint8)


def changed_panel(rgb: np.ndarray, before: np.ndarray, after: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """Where ``after`` differs from ``before``: those pixels in ``after``'s class colour, the rest the image in
    dimmed grey."""
    gray = rgb.astype(np.float32).mean(axis=2, keepdims=True)
    out = np.repeat(gray * 0.35 + 255 * 0.1, 3, axis=2).round().astype(np.uint8)
    changed = np.asarray(before) != np.asarray(after)
    out[changed] = colorize(after, colors)[changed]
    return out


def load_font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def text_strip(text: str, width: int, height: int, fill=(255, 255, 255), color=(0, 0, 0)) -> np.ndarray:
    """A strip ``[height, width, 3]`` with ``text`` left-aligned (cut to fit)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), tuple(fill))
    draw = ImageDraw.Draw(img)
    font = load_font(max(8, int(height * 0.7)))
    while text and draw.textlength(text, font=font) > width - 4 and len(text) > 1:
        text = text[:-2] + "…"
    draw.text((2, max(0, (height - font.size) // 2) if hasattr(font, "size") else 1), text, fill=tuple(color),
              font=font)
    return np.asarray(img)


def banner_strip(width: int, height: Optional[int] = None) -> np.ndarray:
    """The random-weights banner as an image strip ``[height, width, 3]``: white text on :data:`BANNER_RGB`."""
    height = height or max(14, min(40, width // 25))
    return text_strip(BANNER_TEXT, width, height, fill=BANNER_RGB, color=(255, 255, 255))


def panel_row(panels: Sequence[np.ndarray], titles: Sequence[str], title_height: int = 0) -> np.ndarray:
    """Panels of one height side by side (no gaps), each with its title above it in a strip of
    ``title_height`` pixels (default: from the panel height)."""
    h = max(p.shape[0] for p in panels)
    title_height = title_height or max(12, min(28, h // 12))
    columns = []
    for panel, title in zip(panels, titles):
        if panel.shape[0] != h:
            pad = np.full((h - panel.shape[0],) + panel.shape[1:], 255, dtype=np.uint8)
            panel = np.concatenate([panel, pad])
        columns.append(np.concatenate([text_strip(title, panel.shape[1], title_height), panel]))
    return np.concatenate(columns, axis=1)


def with_banner(image: np.ndarray, random_weights: bool) -> np.ndarray:
    """``image`` with the random-weights banner on top when ``random_weights``; else unchanged."""
    if not random_weights:
        return image
    return np.concatenate([banner_strip(image.shape[1]), image])


def legend_entries(classes: Sequence[str], colors: np.ndarray, ids: Sequence[int]) -> List[Tuple[str, tuple]]:
    """``(name, colour in 0..1)`` for the class ids given, in id order."""
    return [(str(classes[i]), tuple(np.asarray(colors[i], dtype=float) / 255.0)) for i in sorted(set(ids))
            if 0 <= i < len(classes)]


# -- matplotlib figures -----------------------------------------------------------------------------------------
def new_figure(width: float, height: float):
    """A matplotlib figure on the Agg canvas (no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


#: the banner's height in inches
BANNER_INCHES = 0.35


def banner_top(fig, random_weights: bool) -> float:
    """The top of the free area of ``fig`` (figure fraction): below the banner when there is one."""
    return 1.0 - (BANNER_INCHES / fig.get_figheight() if random_weights else 0.0)


def figure_banner(fig, random_weights: bool) -> None:
    """The random-weights banner across the top of ``fig`` when ``random_weights`` (:data:`BANNER_INCHES` high)."""
    from matplotlib.patches import Rectangle

    if not random_weights:
        return
    color = tuple(c / 255.0 for c in BANNER_RGB)
    frac = BANNER_INCHES / fig.get_figheight()
    ax = fig.add_axes([0.0, 1.0 - frac, 1.0, frac])
    ax.set_axis_off()
    ax.add_patch(Rectangle((0, 0), 1, 1, transform=ax.transAxes, facecolor=color, edgecolor="none",
                           antialiased=False))
    ax.text(0.5, 0.5, BANNER_TEXT, transform=ax.transAxes, ha="center", va="center", color="white",
            fontsize=11, fontweight="bold")


def figure_legend(fig, entries: Sequence[Tuple[str, tuple]], bottom: float = 0.0) -> None:
    """One legend (class colour patches) along the bottom of ``fig``."""
    from matplotlib.patches import Patch

    if not entries:
        return
    handles = [Patch(facecolor=color, edgecolor="black", label=name) for name, color in entries]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 8), frameon=False, fontsize=8,
               bbox_to_anchor=(0.5, bottom))


def heat_overlay(rgb: np.ndarray, heat: np.ndarray, opacity: float = 0.55) -> np.ndarray:
    """A map ``heat`` (any size, scaled to 0..1 by its max) resized to the image and drawn over it (viridis)."""
    import matplotlib
    from PIL import Image

    heat = np.asarray(heat, dtype=np.float64)
    top = heat.max() if heat.size else 0.0
    heat = heat / top if top > 0 else heat * 0
    h, w = rgb.shape[:2]
    big = np.asarray(Image.fromarray((heat * 255).round().astype(np.uint8)).resize((w, h), Image.NEAREST))
    colored = matplotlib.colormaps["viridis"](big / 255.0)[..., :3] * 255
    return (rgb.astype(np.float32) * (1 - opacity) + colored * opacity).round().astype(np.uint8)
