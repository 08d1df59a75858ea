"""Prepare PASCAL-Context (Mottaghi et al., CVPR 2014) for the ``context60``/``context59`` configs.

Input, from the public downloads:

* SRC: ``VOCdevkit/VOC2010`` of ``VOCtrainval_03-May-2010.tar`` (``JPEGImages/``,
  ``ImageSets/Main/{train,val}.txt``; PASCAL-Context's val split is VOC2010 Main val,
  5105 images).
* ``--mat-dir``: the ``trainval/`` folder of PASCAL-Context's ``trainval.tar.gz``
  (one ``<id>.mat`` per image, ``LabelMap`` = ids of the full 459-class label list;
  default: ``SRC/trainval``).

mmseg's converter reads ``trainval_merged.json`` through the PASCAL in Detail API,
which is not on PyPI; this one reads the ``.mat`` files with scipy. Both use the
standard 59/60-class definition: the 59 most frequent classes keep labels 1..59 (in
alphabetical order), every other class and unlabeled pixels become 0 (background).

Output (OUT, default SRC): ``SegmentationClassContext/<id>.png`` (0..59) and
``ImageSets/SegmentationContext/<split>.txt``; ``OUT/JPEGImages`` links to SRC's.
Context60 evaluates 0..59; Context59 ignores 0 (``reduce_zero_label``).
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys
from typing import Dict, List, Optional, Set, Tuple

import numpy as np

from .common import (base_parser, convert_labels, fail, link_images, list_files, make_lut,
                     read_split, require_dir, require_file, strip_suffix, write_split)

# Index in PASCAL-Context's 459-class labels.txt (1-based) of each of the 59 classes;
# sorted by id, which is also alphabetical order, i.e. the order of labels 1..59.
CONTEXT59_LABEL_IDS: Dict[str, int] = {
    'aeroplane': 2, 'bag': 9, 'bed': 18, 'bedclothes': 19, 'bench': 22, 'bicycle': 23,
    'bird': 25, 'boat': 31, 'book': 33, 'bottle': 34, 'building': 44, 'bus': 45,
    'cabinet': 46, 'car': 59, 'cat': 65, 'ceiling': 68, 'chair': 72, 'cloth': 80,
    'computer': 85, 'cow': 98, 'cup': 104, 'curtain': 105, 'dog': 113, 'door': 115,
    'fence': 144, 'floor': 158, 'flower': 159, 'food': 162, 'grass': 187, 'ground': 189,
    'horse': 207, 'keyboard': 220, 'light': 232, 'motorbike': 258, 'mountain': 259,
    'mouse': 260, 'person': 284, 'plate': 295, 'platform': 296, 'pottedplant': 308,
    'road': 324, 'rock': 326, 'sheep': 347, 'shelves': 349, 'sidewalk': 354, 'sign': 355,
    'sky': 360, 'snow': 366, 'sofa': 368, 'table': 397, 'track': 415, 'train': 416,
    'tree': 420, 'truck': 424, 'tvmonitor': 427, 'wall': 440, 'water': 445, 'window': 454,
    'wood': 458,
}
NUM_FULL_LABELS = 459
MASK_DIR = 'SegmentationClassContext'
SPLIT_DIR = osp.join('ImageSets', 'SegmentationContext')


def context_lut() -> np.ndarray:
    """459-class label id -> 60-class label (0 background, 1..59)."""
    ordered = sorted(CONTEXT59_LABEL_IDS.values())
    return make_lut({full_id: k + 1 for k, full_id in enumerate(ordered)},
                    default=0, size=NUM_FULL_LABELS + 1)


def read_mat_label(path: str) -> np.ndarray:
    """The ``LabelMap`` of a PASCAL-Context ``.mat`` file."""
    from scipy.io import loadmat  # scipy only for this converter
    try:
        label = loadmat(path)['LabelMap']
    except KeyError:
        fail(f"'{path}' has no 'LabelMap' (expected a PASCAL-Context trainval .mat file)")
    return np.asarray(label)


def voc2010_parser(description: str, out_help: str, **options) -> argparse.ArgumentParser:
    """The CLI of the PASCAL-Context converters: ``SRC`` (VOC2010), ``--mat-dir`` and :func:`base_parser`'s."""
    parser = base_parser(description, 'VOCdevkit/VOC2010 folder (JPEGImages/, ImageSets/Main/)', out_help,
                         copy_what='JPEGImages', **options)
    parser.add_argument('--mat-dir', default=None,
                        help="folder of PASCAL-Context <id>.mat files (trainval.tar.gz's "
                             'trainval/; default: SRC/trainval)')
    return parser


def voc2010_inputs(src: str, mat_dir: Optional[str]) -> Tuple[str, str, str]:
    """``(SRC, SRC/JPEGImages, the .mat folder)``, each checked to exist."""
    src = require_dir(src, 'VOC2010 folder (SRC)', 'VOCdevkit/VOC2010')
    img_dir = require_dir(osp.join(src, 'JPEGImages'), 'VOC2010 JPEGImages')
    mat_dir = require_dir(mat_dir or osp.join(src, 'trainval'), 'PASCAL-Context .mat folder (--mat-dir)',
                          "extract trainval.tar.gz and pass its trainval/ folder")
    return src, img_dir, mat_dir


def split_ids(src: str, img_dir: str, mats: Set[str], split: str) -> List[str]:
    """Ids of VOC2010 ``ImageSets/Main/<split>.txt`` that have a ``.mat`` file (val: the 5105 images of
    PASCAL-Context's val split); every one must have its image."""
    split_file = require_file(osp.join(src, 'ImageSets', 'Main', f'{split}.txt'),
                              f'VOC2010 split file ImageSets/Main/{split}.txt')
    ids = [i for i in read_split(split_file) if i in mats]
    if not ids:
        fail(f"none of the ids in '{split_file}' has a .mat file in the --mat-dir folder")
    no_img = [i for i in ids if not osp.isfile(osp.join(img_dir, f'{i}.jpg'))]
    if no_img:
        fail(f"{len(no_img)} of {len(ids)} {split} images missing in '{img_dir}' "
             f'(first: {no_img[0]}.jpg)')
    return ids


def mat_ids(mat_dir: str) -> Set[str]:
    """Ids of the ``<id>.mat`` files of PASCAL-Context's ``trainval/`` folder."""
    mats = {strip_suffix(f, '.mat') for f in list_files(mat_dir, '.mat')}
    if not mats:
        fail(f"no '*.mat' files in '{mat_dir}' (expected trainval.tar.gz's trainval/ folder)")
    return mats


def require_scipy() -> None:
    try:
        import scipy.io  # noqa: F401
    except ImportError:
        fail('scipy is needed to read the .mat files: pip install scipy')


def main(argv: Optional[List[str]] = None) -> None:
    parser = voc2010_parser(
        'Convert PASCAL-Context .mat labels to 60-class PNG masks with split files.',
        'output root (default: SRC); masks, split files and a JPEGImages link go there',
        splits=['val'], split_choices=('train', 'val'))
    args = parser.parse_args(argv)
    require_scipy()
    src, img_dir, mat_dir = voc2010_inputs(args.src, args.mat_dir)
    mats = mat_ids(mat_dir)
    out = args.out or src
    lut = context_lut()
    for split in args.splits:
        ids = split_ids(src, img_dir, mats, split)
        pairs = [(osp.join(mat_dir, f'{i}.mat'), osp.join(out, MASK_DIR, f'{i}.png'))
                 for i in ids]
        convert_labels(f'pascal_context {split}', pairs, lut, args.nproc, reader=read_mat_label)
        write_split(osp.join(out, SPLIT_DIR, f'{split}.txt'), ids)
        print(f'pascal_context {split}: {len(ids)} ids in {osp.join(out, SPLIT_DIR, split)}.txt',
              file=sys.stderr)
    link_images(src, out, 'JPEGImages', args.copy_images)
    print(f'done: masks in {osp.join(out, MASK_DIR)}', file=sys.stderr)

