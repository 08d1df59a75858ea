"""Prepare COCO-Stuff164k (Caesar et al., CVPR 2018) for the ``coco_stuff164k`` config.

Input (SRC), from the public downloads::

    SRC/images/val2017/*.jpg            # COCO val2017.zip
    SRC/annotations/val2017/*.png       # stuffthingmaps_trainval2017.zip

Output (OUT, default SRC): ``OUT/annotations/<split>/<id>_labelTrainIds.png`` with
trainIds 0..170 (80 things, then 91 stuff classes) and 255 = unlabeled, as mmseg's
``COCOStuffDataset`` expects; ``OUT/images/<split>`` links to SRC's images.
Label values that COCO-Stuff never uses also become 255.
"""
from __future__ import annotations

import os.path as osp
import sys
from typing import List, Optional

import numpy as np

from .common import (base_parser, coco_split_pairs, coco_stuff_train_ids, convert_labels,
                     link_images, make_lut, require_dir)

OUT_SUFFIX = '_labelTrainIds.png'


def coco_stuff_lut() -> np.ndarray:
    """stuffthingmaps value -> trainId (0..170), everything else -> 255."""
    return make_lut(coco_stuff_train_ids())


def main(argv: Optional[List[str]] = None) -> None:
    parser = base_parser(
        'Convert COCO-Stuff164k stuffthingmaps to 171-class trainId masks.',
        'COCO-Stuff164k root with images/<split>/ and annotations/<split>/ (raw maps)',
        'output root (default: SRC); images are linked, masks written under it',
        splits=['val2017'], copy_what='images')
    args = parser.parse_args(argv)
    src = require_dir(args.src, 'COCO-Stuff164k root (SRC)')
    out = args.out or src
    lut = coco_stuff_lut()
    for split in args.splits:
        require_dir(osp.join(src, 'images', split), f'COCO image folder for {split}',
                    f'unzip {split}.zip into images/')
        pairs = coco_split_pairs(src, out, split, OUT_SUFFIX)
        convert_labels(f'coco_stuff164k {split}', pairs, lut, args.nproc)
        link_images(src, out, osp.join('images', split), args.copy_images)
    print(f'done: masks in {osp.join(out, "annotations")}', file=sys.stderr)

