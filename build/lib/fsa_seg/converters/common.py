"""Helpers shared by the dataset converters of this package.

Only numpy and Pillow (and the standard library) are used, so the converters start
fast and need neither mmcv nor a GPU. Errors are raised as ``SystemExit`` with a
one-line message, which argparse-style CLIs print as ``error: ...`` with exit code 1.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import shutil
import sys
import time
from multiprocessing import Pool
from typing import Callable, Iterable, List, Mapping, NoReturn, Optional, Sequence, TypeVar

import numpy as np
from PIL import Image

T = TypeVar('T')
R = TypeVar('R')

IGNORE = 255
IGNORE16 = 65535  # unlabeled in the 16-bit TIFF masks of ADE20K-847 and PASCAL-Context-459 (Detectron2's)
README = 'data/README.md'


def fail(message: str) -> NoReturn:
    """Stop the converter with a one-line error (exit code 1)."""
    raise SystemExit(f'error: {message}')


def require_dir(path: str, what: str, hint: str = '') -> str:
    """Return ``path`` if it is a directory, else stop with a message naming ``what``."""
    if not osp.isdir(path):
        extra = f' ({hint})' if hint else ''
        fail(f"{what} not found: '{path}'{extra}; see {README}")
    return path


def require_file(path: str, what: str, hint: str = '') -> str:
    """Return ``path`` if it is a file, else stop with a message naming ``what``."""
    if not osp.isfile(path):
        extra = f' ({hint})' if hint else ''
        fail(f"{what} not found: '{path}'{extra}; see {README}")
    return path


def base_parser(description: str, src_help: str, out_help: str, splits: Optional[Sequence[str]] = None,
                split_choices: Optional[Sequence[str]] = None, copy_what: Optional[str] = None
                ) -> argparse.ArgumentParser:
    """The common CLI: ``SRC [-o OUT] [--nproc N]``; with ``splits`` (the default) also ``--splits``, with
    ``copy_what`` (what is linked into OUT) also ``--copy-images``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('src', metavar='SRC', help=src_help)
    parser.add_argument('-o', '--out', metavar='OUT', default=None, help=out_help)
    parser.add_argument('--nproc', type=int, default=1,
                        help='worker processes for the conversion (default: 1)')
    if splits is not None:
        parser.add_argument('--splits', nargs='+', default=list(splits), choices=split_choices,
                            help=f"splits to convert (default: {' '.join(splits)}; evaluation uses only val)")
    if copy_what is not None:
        parser.add_argument('--copy-images', action='store_true',
                            help=f'copy {copy_what} into OUT instead of symlinking')
    return parser


def list_files(root: str, suffix: str, recursive: bool = False,
               exclude: Sequence[str] = ()) -> List[str]:
    """Sorted paths relative to ``root`` of files ending in ``suffix``.

    ``exclude``: substrings of file names to skip (e.g. converter outputs that share
    a folder with the inputs).
    """
    found: List[str] = []
    if recursive:
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            dirnames.sort()
            rel = osp.relpath(dirpath, root)
            for name in filenames:
                if name.endswith(suffix) and not any(x in name for x in exclude):
                    found.append(name if rel == '.' else osp.join(rel, name))
    else:
        with os.scandir(root) as entries:
            for entry in entries:
                name = entry.name
                if (name.endswith(suffix) and not any(x in name for x in exclude)
                        and entry.is_file()):
                    found.append(name)
    return sorted(found)


def read_split(path: str) -> List[str]:
    """Image ids of a split file (one per line; blank lines ignored)."""
    with open(path, encoding='utf-8') as f:
        return [line.strip() for line in f if line.strip()]


def write_split(path: str, ids: Iterable[str]) -> None:
    os.makedirs(osp.dirname(path) or '.', exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
        f.writelines(f'{i}\n' for i in ids)


def load_label(path: str) -> np.ndarray:
    """A label map as a 2-D integer array (palette PNGs give their indices).

    Raises:
        ValueError: a colour (RGB/RGBA) or multi-channel image, i.e. not a label map.
        OSError: the file cannot be read as an image.
    """
    with Image.open(path) as img:
        if img.mode in ('RGB', 'RGBA'):
            raise ValueError(f"'{path}' is a colour ({img.mode}) image; expected a "
                             'single-channel label map (class ids, or a palette PNG)')
        arr = np.array(img)
    if arr.ndim != 2:
        raise ValueError(f"'{path}' has shape {arr.shape}; expected a single-channel label map")
    return arr


def read_label(path: str) -> np.ndarray:
    """:func:`load_label`, stopping the converter with a one-line error on failure."""
    try:
        return load_label(path)
    except (OSError, ValueError) as err:
        fail(str(err))


def write_label(path: str, label: np.ndarray) -> None:
    """Write a uint8 label map as a grayscale PNG (values are class ids, 255 = ignore)."""
    os.makedirs(osp.dirname(path) or '.', exist_ok=True)
    Image.fromarray(np.ascontiguousarray(label, dtype=np.uint8), mode='L').save(path)


def write_label16(path: str, label: np.ndarray) -> None:
    """Write a uint16 label map as a 16-bit TIFF (Detectron2's format for more than 255 classes)."""
    os.makedirs(osp.dirname(path) or '.', exist_ok=True)
    Image.fromarray(np.ascontiguousarray(label, dtype=np.uint16)).save(path, format='TIFF')


def make_lut(mapping: Mapping[int, int], default: int = IGNORE, size: int = 256,
             dtype: type = np.uint8) -> np.ndarray:
    """A lookup table ``lut[old] = new`` for label values ``0..size-1``."""
    lut = np.full(size, default, dtype=dtype)
    for old, new in mapping.items():
        lut[old] = new
    return lut


def apply_lut(label: np.ndarray, lut: np.ndarray, outside: int = IGNORE) -> np.ndarray:
    """Map every value of ``label`` through ``lut`` (output dtype: the table's); values outside the table
    become ``outside``."""
    idx = label.astype(np.int64)
    out = np.full(label.shape, outside, dtype=lut.dtype)
    valid = (idx >= 0) & (idx < len(lut))
    out[valid] = lut[idx[valid]]
    return out


def link_or_copy(src: str, dst: str, copy: bool = False) -> str:
    """Make ``dst`` point to ``src`` (absolute symlink), or copy the tree with ``copy``.

    Returns what was done, for the progress log. An existing ``dst`` is kept.
    """
    if osp.lexists(dst):
        return f'kept existing {dst}'
    os.makedirs(osp.dirname(dst) or '.', exist_ok=True)
    if copy:
        if osp.isdir(src):
            shutil.copytree(src, dst)
        else:
            shutil.copy2(src, dst)
        return f'copied {src} -> {dst}'
    os.symlink(osp.abspath(src), dst, target_is_directory=osp.isdir(src))
    return f'linked {dst} -> {osp.abspath(src)}'


class Progress:
    """A single self-updating progress line on stderr (``name: done/total``)."""

    def __init__(self, name: str, total: int, stream=None) -> None:
        self.name, self.total, self.done = name, total, 0
        self.stream = stream or sys.stderr
        self._last = 0.0
        self._tty = hasattr(self.stream, 'isatty') and self.stream.isatty()

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        # Redraw at most ~5x per second on a terminal; logs get start/end lines only.
        if self._tty and (now - self._last > 0.2 or self.done == self.total):
            self._last = now
            self.stream.write(f'\r{self.name}: {self.done}/{self.total}')
            self.stream.flush()

    def close(self) -> None:
        # On a terminal, '\r' overwrites the running count with the final line.
        prefix = '\r' if self._tty else ''
        self.stream.write(f'{prefix}{self.name}: {self.done}/{self.total} done\n')
        self.stream.flush()


def run_tasks(func: Callable[[T], R], items: Sequence[T], nproc: int, name: str) -> List[R]:
    """Run ``func`` over ``items`` (in ``nproc`` processes if > 1) with a progress line."""
    progress = Progress(name, len(items))
    print(f'{name}: {len(items)} files', file=sys.stderr)
    results: List[R] = []
    if nproc > 1 and len(items) > 1:
        with Pool(min(nproc, len(items))) as pool:
            for result in pool.imap(func, items, chunksize=16):
                results.append(result)
                progress.update()
    else:
        for item in items:
            results.append(func(item))
            progress.update()
    progress.close()
    return results


def check_values(values: Iterable[int], max_label: int, what: str) -> Optional[str]:
    """A problem description if ``values`` go beyond ``0..max_label`` and 255, else None."""
    bad = sorted(v for v in values if v > max_label and v != IGNORE)
    if bad:
        shown = ', '.join(map(str, bad[:10])) + (' ...' if len(bad) > 10 else '')
        return f'{what}: unexpected label values {shown} (allowed 0..{max_label} and 255)'
    return None


def _values_of(path: str) -> List[int]:
    return [int(v) for v in np.unique(read_label(path))]


def verify_pairs(name: str, img_dir: str, mask_dir: str, ids: Sequence[str], img_suffix: str,
                 mask_suffix: str, max_label: int, nproc: int = 1,
                 max_masks: Optional[int] = None) -> List[int]:
    """Check that every id has an image and a mask with label values in range.

    Reads all masks, or an evenly spaced sample of ``max_masks``. Stops with a
    one-line error on the first kind of problem; returns the label values seen.
    """
    if not ids:
        fail(f'{name}: no images listed')
    for folder, suffix, what in ((img_dir, img_suffix, 'images'), (mask_dir, mask_suffix, 'masks')):
        missing = [i for i in ids if not osp.isfile(osp.join(folder, i + suffix))]
        if missing:
            fail(f"{name}: {len(missing)} of {len(ids)} {what} missing in '{folder}' "
                 f"(first: {missing[0] + suffix})")
    sample = list(ids)
    if max_masks is not None and 0 < max_masks < len(sample):
        step = len(sample) / max_masks
        sample = [sample[int(k * step)] for k in range(max_masks)]
    paths = [osp.join(mask_dir, i + mask_suffix) for i in sample]
    per_mask = run_tasks(_values_of, paths, nproc, f'{name}: reading masks')
    values = sorted(set().union(*per_mask)) if per_mask else []
    problem = check_values(values, max_label, name)
    if problem:
        fail(problem)
    return values


def _convert_one(task: tuple) -> None:
    src, dst, lut, reader = task
    if lut.dtype == np.uint16:  # more than 255 classes: 16-bit TIFF, 65535 outside the table
        write_label16(dst, apply_lut(reader(src), lut, IGNORE16))
    else:
        write_label(dst, apply_lut(reader(src), lut))


def convert_labels(name: str, pairs: Sequence[tuple], lut: np.ndarray, nproc: int,
                   reader: Callable[[str], np.ndarray] = read_label) -> None:
    """Write ``lut[reader(src)]`` to ``dst`` for every ``(src, dst)`` pair, with progress (a uint16 table
    writes 16-bit TIFFs, see :func:`write_label16`)."""
    tasks = [(src, dst, lut, reader) for src, dst in pairs]
    run_tasks(_convert_one, tasks, nproc, name)


def strip_suffix(name: str, suffix: str) -> str:
    return name[:-len(suffix)] if suffix and name.endswith(suffix) else name


# COCO-Stuff164k ``stuffthingmaps``: value = COCO category id - 1 (0..181; 255 unlabeled).
# These 11 thing ids have no annotations; dropping them leaves the 171 trainIds
# (80 things, then 91 stuff) of mmseg's and the released converters.
COCO_UNUSED_IDS = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)
COCO_NUM_THINGS = 80


def coco_stuff_train_ids() -> dict:
    """``{stuffthingmaps value: trainId}`` for the 171 COCO-Stuff classes."""
    used = [v for v in range(182) if v not in COCO_UNUSED_IDS]
    return {value: train_id for train_id, value in enumerate(used)}


def coco_split_pairs(src: str, out: str, split: str, out_suffix: str) -> List[tuple]:
    """``(raw mask, output mask)`` pairs of one COCO split; skips earlier outputs."""
    ann_dir = require_dir(osp.join(src, 'annotations', split),
                          f'COCO-Stuff annotation folder for {split}',
                          'unzip stuffthingmaps_trainval2017.zip into annotations/')
    raw = list_files(ann_dir, '.png', exclude=('TrainIds',))
    if not raw:
        fail(f"no raw stuffthingmaps '*.png' in '{ann_dir}' (only converted *TrainIds.png "
             'files or nothing); unzip stuffthingmaps_trainval2017.zip there')
    out_dir = osp.join(out, 'annotations', split)
    return [(osp.join(ann_dir, f), osp.join(out_dir, strip_suffix(f, '.png') + out_suffix))
            for f in raw]


def link_images(src: str, out: str, rel: str, copy: bool) -> None:
    """Give ``out/rel`` the images of ``src/rel`` (symlink by default) when out != src."""
    if osp.abspath(src) == osp.abspath(out):
        return
    print(link_or_copy(osp.join(src, rel), osp.join(out, rel), copy=copy), file=sys.stderr)
