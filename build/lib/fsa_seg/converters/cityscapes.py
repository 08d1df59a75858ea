"""Prepare Cityscapes (Cordts et al., CVPR 2016) for the ``cityscapes`` config.

Input (SRC), from the public downloads ``leftImg8bit_trainvaltest.zip`` and
``gtFine_trainvaltest.zip``::

    SRC/leftImg8bit/val/<city>/*_leftImg8bit.png
    SRC/gtFine/val/<city>/*_gtFine_labelIds.png

Output (OUT, default SRC): ``OUT/gtFine/<split>/<city>/*_gtFine_labelTrainIds.png``
with the 19 evaluation trainIds 0..18 and 255 for every other label id, as written
by cityscapesScripts (``createTrainIdLabelImgs``) and expected by mmseg's
``CityscapesDataset``; ``OUT/leftImg8bit/<split>`` links to SRC's images.
"""
from __future__ import annotations

import os.path as osp
import sys
from typing import List, Optional

import numpy as np

from .common import (base_parser, convert_labels, fail, link_images, list_files, make_lut,
                     require_dir, strip_suffix)

IN_SUFFIX = '_gtFine_labelIds.png'
OUT_SUFFIX = '_gtFine_labelTrainIds.png'
IMG_SUFFIX = '_leftImg8bit.png'

# Cityscapes label id -> trainId of the 19 evaluated classes (cityscapesScripts
# labels.py); ids not listed are void and become 255.
LABEL_ID_TO_TRAIN_ID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}


def cityscapes_lut() -> np.ndarray:
    return make_lut(LABEL_ID_TO_TRAIN_ID)


def split_pairs(src: str, out: str, split: str) -> List[tuple]:
    """``(labelIds, labelTrainIds)`` pairs of one split; every image must have one."""
    gt_dir = require_dir(osp.join(src, 'gtFine', split), f'Cityscapes gtFine/{split}',
                         'unzip gtFine_trainvaltest.zip into SRC')
    img_dir = require_dir(osp.join(src, 'leftImg8bit', split), f'Cityscapes leftImg8bit/{split}',
                          'unzip leftImg8bit_trainvaltest.zip into SRC')
    labels = list_files(gt_dir, IN_SUFFIX, recursive=True)
    if not labels:
        fail(f"no '*{IN_SUFFIX}' files under '{gt_dir}' (expected <city>/ folders from "
             'gtFine_trainvaltest.zip)')
    stems = {strip_suffix(f, IN_SUFFIX) for f in labels}
    images = list_files(img_dir, IMG_SUFFIX, recursive=True)
    unmatched = [f for f in images if strip_suffix(f, IMG_SUFFIX) not in stems]
    if unmatched:
        fail(f"{len(unmatched)} of {len(images)} images in '{img_dir}' have no "
             f"'{IN_SUFFIX}' (first: {unmatched[0]})")
    out_dir = osp.join(out, 'gtFine', split)
    return [(osp.join(gt_dir, f), osp.join(out_dir, strip_suffix(f, IN_SUFFIX) + OUT_SUFFIX))
            for f in labels]


def main(argv: Optional[List[str]] = None) -> None:
    parser = base_parser(
        'Convert Cityscapes gtFine *_labelIds.png to the 19-class *_labelTrainIds.png.',
        'Cityscapes root with leftImg8bit/ and gtFine/',
        'output root (default: SRC); images are linked, masks written under it',
        splits=['val'], copy_what='images')
    args = parser.parse_args(argv)
    src = require_dir(args.src, 'Cityscapes root (SRC)')
    out = args.out or src
    lut = cityscapes_lut()
    for split in args.splits:
        pairs = split_pairs(src, out, split)
        convert_labels(f'cityscapes {split}', pairs, lut, args.nproc)
        link_images(src, out, osp.join('leftImg8bit', split), args.copy_images)
    print(f'done: masks in {osp.join(out, "gtFine")}', file=sys.stderr)

