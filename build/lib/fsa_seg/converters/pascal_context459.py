"""Prepare PASCAL-Context with its full 459 labels (Mottaghi et al., CVPR 2014) for the ``context459`` config.

Input, from the public downloads (as for ``pascal_context.py``):

* SRC: ``VOCdevkit/VOC2010`` of ``VOCtrainval_03-May-2010.tar`` (``JPEGImages/``, ``ImageSets/Main/val.txt``);
* ``--mat-dir``: the ``trainval/`` folder of PASCAL-Context's ``trainval.tar.gz`` (``<id>.mat``, ``LabelMap`` =
  ids of the 459-class ``labels.txt``, 1..459, 0 unlabeled; default: ``SRC/trainval``).

Output (OUT, default SRC), the layout of CAT-Seg's ``datasets/prepare_pascal_context_459.py`` that the released
FSA/ProxyCLIP ``cfg_context459.py`` read: ``annotations_detectron2/pc459_val/<id>.tif``, 16-bit TIFF with label
id - 1 (0..458) and 65535 for unlabeled pixels (ODISE's ``prepare_pascal_ctx_full_sem_seg.py`` writes the same
values); ``ImageSets/SegmentationContext/val.txt`` (the ids; the same file ``pascal_context.py`` writes) and
``OUT/JPEGImages`` linked to SRC's.

The val images are the ids of VOC2010 ``ImageSets/Main/val.txt`` with a ``.mat`` file: the 5105 of
PASCAL-Context's val split (CAT-Seg's own ``pascalcontext_val.txt`` lists 5104 of them).
"""
from __future__ import annotations

import os.path as osp
import sys
from typing import List, Optional

import numpy as np

from .common import IGNORE16, convert_labels, link_images, make_lut, write_split
from .pascal_context import (NUM_FULL_LABELS, SPLIT_DIR, mat_ids, read_mat_label, require_scipy, split_ids,
                             voc2010_inputs, voc2010_parser)

MASK_DIR = osp.join('annotations_detectron2', 'pc459_val')


def context459_lut() -> np.ndarray:
    """459-class label id (1..459) -> 0..458; 0 (unlabeled) -> 65535."""
    return make_lut({k: k - 1 for k in range(1, NUM_FULL_LABELS + 1)}, default=IGNORE16,
                    size=NUM_FULL_LABELS + 1, dtype=np.uint16)


def main(argv: Optional[List[str]] = None) -> None:
    parser = voc2010_parser(
        'Convert PASCAL-Context .mat labels to 459-class 16-bit TIFF masks (val split).',
        'output root (default: SRC); masks, the split file and a JPEGImages link go there')
    args = parser.parse_args(argv)
    require_scipy()
    src, img_dir, mat_dir = voc2010_inputs(args.src, args.mat_dir)
    ids = split_ids(src, img_dir, mat_ids(mat_dir), 'val')
    out = args.out or src
    pairs = [(osp.join(mat_dir, f'{i}.mat'), osp.join(out, MASK_DIR, f'{i}.tif')) for i in ids]
    convert_labels('pascal_context459 val', pairs, context459_lut(), args.nproc, reader=read_mat_label)
    write_split(osp.join(out, SPLIT_DIR, 'val.txt'), ids)
    print(f'pascal_context459 val: {len(ids)} ids in {osp.join(out, SPLIT_DIR, "val.txt")}', file=sys.stderr)
    link_images(src, out, 'JPEGImages', args.copy_images)
    print(f'done: masks in {osp.join(out, MASK_DIR)}', file=sys.stderr)
