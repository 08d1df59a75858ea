"""Prepare COCO-Object (GroupViT/TCL protocol, used by FSA) from COCO-Stuff164k.

Input (SRC): a COCO-Stuff164k root as for ``coco_stuff164k.py``
(``images/<split>/*.jpg``, raw ``annotations/<split>/*.png`` stuffthingmaps).

Output (OUT, default SRC; the config expects ``data/coco_object``):
``OUT/annotations/<split>/<id>_instanceTrainIds.png`` with 0 = background (all 91
stuff classes), 1..80 = the COCO things in trainId order; ``OUT/images/<split>``
links to SRC's images.

Unlabeled pixels (255): the released converter (``datasets/cvt_coco_object.py``,
from GroupViT) maps them to background 0, and published COCO-Object numbers use
that; ``--unlabeled ignore`` keeps them as 255 instead.
"""
from __future__ import annotations

import os.path as osp
import sys
from typing import List, Optional

import numpy as np

from .common import (COCO_NUM_THINGS, IGNORE, base_parser, coco_split_pairs,
                     coco_stuff_train_ids, convert_labels, link_images, make_lut,
                     require_dir)

OUT_SUFFIX = '_instanceTrainIds.png'


def coco_object_lut(unlabeled: str = 'background') -> np.ndarray:
    """stuffthingmaps value -> COCO-Object label (0 background, 1..80 things)."""
    mapping = {value: (train_id + 1 if train_id < COCO_NUM_THINGS else 0)
               for value, train_id in coco_stuff_train_ids().items()}
    mapping[IGNORE] = 0 if unlabeled == 'background' else IGNORE
    return make_lut(mapping)


def main(argv: Optional[List[str]] = None) -> None:
    parser = base_parser(
        'Convert COCO-Stuff164k stuffthingmaps to COCO-Object masks (background + 80 things).',
        'COCO-Stuff164k root with images/<split>/ and annotations/<split>/ (raw maps)',
        'output root (default: SRC; the config expects data/coco_object)',
        splits=['val2017'], copy_what='images')
    parser.add_argument('--unlabeled', choices=('background', 'ignore'), default='background',
                        help='label of unlabeled (255) pixels: background 0 as released '
                             '(default), or ignore 255')
    args = parser.parse_args(argv)
    src = require_dir(args.src, 'COCO-Stuff164k root (SRC)')
    out = args.out or src
    lut = coco_object_lut(args.unlabeled)
    for split in args.splits:
        require_dir(osp.join(src, 'images', split), f'COCO image folder for {split}',
                    f'unzip {split}.zip into images/')
        pairs = coco_split_pairs(src, out, split, OUT_SUFFIX)
        convert_labels(f'coco_object {split}', pairs, lut, args.nproc)
        link_images(src, out, osp.join('images', split), args.copy_images)
    print(f'done: masks in {osp.join(out, "annotations")}', file=sys.stderr)

