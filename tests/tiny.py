"""The tiny models and runs the fast tests share.

``TINY_CLIP``: the tiny CLIP (``tiny-ViT-16``: patch 16, width 64) with random weights, one prompt template
instead of 80 and no text-embedding cache, as keyword arguments of ``CLIPSegModel`` / ``FSASegmentor``.
``tiny_run_options``: the same as config overrides of an evaluation (``evaluate``, ``tools/test.py
--cfg-options``), with the tiny DINO proxy, a three-class name file (the dataset told the same classes), small
images and no worker processes. The fixtures of the same names in conftest.py hand them to a test; module-level
tables import them from here.
"""
from pathlib import Path
from typing import Any, Dict, List, Optional

TINY_CLIP: Dict[str, Any] = dict(clip_model="tiny-ViT-16", random_weights=True, cache_text=False, templates="single")

# Three of VOC's classes, in VOC's order of ids: the dataset is told the same classes (metainfo), so it scores
# these three and ignores the other labels.
TINY_CLASSES = ("background", "cat", "aeroplane")


def tiny_run_options(tmp_path: Path, data_root: Optional[Path] = None, **extra: Any) -> Dict[str, Any]:
    """Config overrides for a tiny evaluation: writes ``tmp_path/names.txt`` (three classes) and points the
    dataset at ``data_root`` when given; ``extra`` overrides add to or replace these."""
    names = Path(tmp_path) / "names.txt"
    names.write_text("".join(f"{name}\n" for name in TINY_CLASSES))
    options = {f"model.{key}": value for key, value in TINY_CLIP.items()}
    options.update({"model.vfm": "tiny-dino", "model.name_path": str(names), "model.slide_crop": 0,
                    "test_dataloader.dataset.metainfo.classes": TINY_CLASSES,
                    "test_dataloader.dataset.pipeline.1.scale": (64, 48), "test_dataloader.num_workers": 0})
    if data_root is not None:
        options["test_dataloader.dataset.data_root"] = str(data_root)
    options.update(extra)
    return options


def as_cli(options: Dict[str, Any]) -> List[str]:
    """The overrides as ``--cfg-options`` words (tuples as ``(a,b)``, which mmengine's DictAction reads back)."""
    return [f"{key}={'(' + ','.join(map(str, value)) + ')' if isinstance(value, tuple) else value}"
            for key, value in options.items()]
