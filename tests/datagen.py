"""Small generated datasets in the benchmarks' layouts, for end-to-end tests."""
from pathlib import Path
from typing import Iterable, List, Tuple

import numpy as np
from PIL import Image


def write_voc(root: Path, sizes: Iterable[Tuple[int, int]], num_classes: int = 21, seed: int = 0) -> List[str]:
    """VOC2012 layout (JPEGImages, SegmentationClass palette PNGs, ImageSets/Segmentation/val.txt).

    ``sizes`` are (height, width); labels are blocks of random classes with an ignore (255) border.
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    names = []
    for i, (h, w) in enumerate(sizes):
        name = f"img_{i:04d}"
        img = rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)
        Image.fromarray(img).save(root / "JPEGImages" / f"{name}.jpg")
        label = np.zeros((h, w), dtype=np.uint8)
        label[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = rng.integers(1, num_classes)
        label[:2] = 255
        mask = Image.fromarray(label, mode="P")
        mask.putpalette(list(rng.integers(0, 255, size=768, dtype=np.uint8)))
        mask.save(root / "SegmentationClass" / f"{name}.png")
        names.append(name)
    (root / "ImageSets/Segmentation/val.txt").write_text("\n".join(names) + "\n")
    return names
