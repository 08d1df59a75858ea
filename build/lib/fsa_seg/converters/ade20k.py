"""Check ADE20K / ADEChallengeData2016 (Zhou et al., CVPR 2017) for the ``ade20k`` config.

The public ``ADEChallengeData2016.zip`` already has the layout the config uses, so
nothing is converted::

    ADEChallengeData2016/images/validation/ADE_val_*.jpg        # 2000 images
    ADEChallengeData2016/annotations/validation/ADE_val_*.png   # 0 other, 1..150

This script checks that layout and the mask values, and with ``-o`` links the folder
where the config looks for it (``data/ade/ADEChallengeData2016``).
"""
from __future__ import annotations

import os.path as osp
import sys
from typing import List, Optional

from .common import (base_parser, fail, link_or_copy, list_files, require_dir, strip_suffix,
                     verify_pairs)

NUM_CLASSES = 150  # mask values 1..150; 0 ("other") is ignored by the config


def main(argv: Optional[List[str]] = None) -> None:
    parser = base_parser(
        'Check an ADEChallengeData2016 folder (and optionally link it into data/).',
        'ADEChallengeData2016 folder (or the folder holding it)',
        'create a symlink OUT -> SRC, e.g. data/ade/ADEChallengeData2016')
    parser.add_argument('--split', default='validation',
                        help='split to check (default: validation)')
    parser.add_argument('--max-masks', type=int, default=None,
                        help='read only this many masks, evenly spaced (default: all)')
    args = parser.parse_args(argv)
    src = require_dir(args.src, 'ADEChallengeData2016 folder (SRC)')
    if osp.isdir(osp.join(src, 'ADEChallengeData2016')):
        src = osp.join(src, 'ADEChallengeData2016')
    img_dir = require_dir(osp.join(src, 'images', args.split), f'ADE20K images/{args.split}')
    mask_dir = require_dir(osp.join(src, 'annotations', args.split),
                           f'ADE20K annotations/{args.split}')
    ids = [strip_suffix(f, '.jpg') for f in list_files(img_dir, '.jpg')]
    if not ids:
        fail(f"no '*.jpg' images in '{img_dir}'")
    values = verify_pairs(f'ade20k {args.split}', img_dir, mask_dir, ids, '.jpg', '.png',
                          NUM_CLASSES, args.nproc, args.max_masks)
    print(f'ade20k {args.split}: {len(ids)} images with masks; label values {values}: OK',
          file=sys.stderr)
    if args.out:
        print(link_or_copy(src, args.out), file=sys.stderr)

