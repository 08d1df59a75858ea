"""Check PASCAL VOC 2012 (Everingham et al., IJCV 2010) for the ``voc21``/``voc20`` configs.

The public ``VOCtrainval_11-May-2012.tar`` already has the layout the configs use,
so nothing is converted::

    VOCdevkit/VOC2012/JPEGImages/<id>.jpg
    VOCdevkit/VOC2012/SegmentationClass/<id>.png     # palette PNG: 0..20, 255 boundary
    VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt # 1449 ids

This script checks that layout and the mask values, and with ``-o`` links the folder
where the config looks for it (``data/VOCdevkit/VOC2012``).
"""
from __future__ import annotations

import os.path as osp
import sys
from typing import List, Optional

from .common import base_parser, link_or_copy, read_split, require_dir, require_file, verify_pairs

NUM_CLASSES = 21  # background + 20 objects


def main(argv: Optional[List[str]] = None) -> None:
    parser = base_parser(
        'Check a PASCAL VOC 2012 folder (and optionally link it into data/).',
        'VOCdevkit/VOC2012 folder (or the VOCdevkit folder holding it)',
        'create a symlink OUT -> SRC, e.g. data/VOCdevkit/VOC2012')
    parser.add_argument('--split', default='val', help='split to check (default: val)')
    parser.add_argument('--max-masks', type=int, default=None,
                        help='read only this many masks, evenly spaced (default: all)')
    args = parser.parse_args(argv)
    src = require_dir(args.src, 'VOC2012 folder (SRC)')
    if osp.isdir(osp.join(src, 'VOC2012')):
        src = osp.join(src, 'VOC2012')
    img_dir = require_dir(osp.join(src, 'JPEGImages'), 'VOC2012 JPEGImages')
    mask_dir = require_dir(osp.join(src, 'SegmentationClass'), 'VOC2012 SegmentationClass')
    split_file = require_file(osp.join(src, 'ImageSets', 'Segmentation', f'{args.split}.txt'),
                              f'VOC2012 split file ImageSets/Segmentation/{args.split}.txt')
    ids = read_split(split_file)
    values = verify_pairs(f'voc {args.split}', img_dir, mask_dir, ids, '.jpg', '.png',
                          NUM_CLASSES - 1, args.nproc, args.max_masks)
    print(f'voc {args.split}: {len(ids)} images with masks; label values {values}: OK',
          file=sys.stderr)
    if args.out:
        print(link_or_copy(src, args.out), file=sys.stderr)

