"""What ``tools/check_data.py`` reports: for each benchmark, whether its folders exist, how many validation images
and masks there are, images without a mask, the label values of a sample of masks against the values the
benchmark allows (its classes and its ignore value: 255, or 65535 for the 16-bit masks of ADE20K-847 and
PASCAL-Context-459), and the problems found. Needs numpy and Pillow only (mmengine
for ``from_configs``)."""
from __future__ import annotations

import os.path as osp
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np
from PIL import Image

from ..benchmarks import BENCHMARKS, Benchmark
from ..resources import config_path
from ..converters.common import list_files, load_label, read_split, strip_suffix


@dataclass
class Report:
    """What :func:`check_benchmark` found for one benchmark."""

    name: str
    title: str
    status: str = 'missing'  # ready | missing | problems
    data_root: str = ''
    images: int = 0
    masks: int = 0
    images_without_mask: int = 0
    masks_checked: int = 0
    labels_seen: List[int] = field(default_factory=list)
    allowed: str = ''
    problems: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)


def compact(values: Sequence[int]) -> str:
    """``[0, 1, 2, 5, 255]`` -> ``'0-2,5,255'``."""
    parts: List[str] = []
    start = prev = None
    for v in sorted(values):
        if start is None:
            start = prev = v
        elif v == prev + 1:
            prev = v
        else:
            parts.append(str(start) if start == prev else f'{start}-{prev}')
            start = prev = v
    if start is not None:
        parts.append(str(start) if start == prev else f'{start}-{prev}')
    return ','.join(parts)


def _sample(items: Sequence[str], n: int) -> List[str]:
    """``n`` evenly spaced items (all when ``n`` <= 0 or ``n`` >= len)."""
    if n <= 0 or n >= len(items):
        return list(items)
    step = len(items) / n
    return [items[int(k * step)] for k in range(n)]


def _list_images(spec: Benchmark, root: str, report: Report) -> Optional[List[str]]:
    """Image stems (relative to the image folder) of the split; None if it cannot be listed."""
    img_dir = osp.join(root, spec.img_dir)
    if spec.ann_file:
        ann = osp.join(root, spec.ann_file)
        if not osp.isfile(ann):
            report.problems.append(f'split file missing: {ann}')
            return None
        stems = read_split(ann)
        absent = [s for s in stems if not osp.isfile(osp.join(img_dir, s + spec.img_suffix))]
        if absent:
            report.problems.append(f'{len(absent)} images listed in {spec.ann_file} are missing '
                                   f'(first: {absent[0]}{spec.img_suffix})')
        absent_set = set(absent)
        return [s for s in stems if s not in absent_set]
    files = list_files(img_dir, spec.img_suffix, recursive=True)
    return [strip_suffix(f, spec.img_suffix) for f in files]


def _check_masks(spec: Benchmark, img_dir: str, mask_dir: str, stems: Sequence[str],
                 max_masks: int, report: Report) -> None:
    seen: set = set()
    bad_mode: List[str] = []
    bad_size: List[str] = []
    for stem in _sample(stems, max_masks):
        mask_path = osp.join(mask_dir, stem + spec.mask_suffix)
        try:
            label = load_label(mask_path)
        except (OSError, ValueError) as err:
            bad_mode.append(str(err))
            continue
        report.masks_checked += 1
        seen.update(int(v) for v in np.unique(label))
        with Image.open(osp.join(img_dir, stem + spec.img_suffix)) as img:
            width, height = img.size  # header only, no decoding
        if label.shape != (height, width):
            bad_size.append(f'{stem}: mask {label.shape[1]}x{label.shape[0]}, '
                            f'image {width}x{height}')
    report.labels_seen = sorted(seen)
    if bad_mode:
        report.problems.append(f'{len(bad_mode)} unreadable/colour masks (first: {bad_mode[0]})')
    if bad_size:
        report.problems.append(f'{len(bad_size)} masks differ in size from their image '
                               f'(first: {bad_size[0]})')
    unexpected = [v for v in report.labels_seen if v > spec.max_raw_label and v != spec.ignore_index]
    if unexpected:
        report.problems.append(f'unexpected label values {compact(unexpected)} '
                               f'(allowed {report.allowed}); masks not converted?')


def check_benchmark(spec: Benchmark, root: str, max_masks: int = 50) -> Report:
    """Inspect one benchmark whose data root is ``root``."""
    report = Report(name=spec.name, title=spec.title, data_root=root,
                    allowed=f'0-{spec.max_raw_label},{spec.ignore_index}')
    img_dir, mask_dir = osp.join(root, spec.img_dir), osp.join(root, spec.mask_dir)
    for path, what in ((root, 'data root'), (img_dir, 'image folder'),
                       (mask_dir, 'annotation folder')):
        if not osp.isdir(path):
            report.problems.append(f'{what} missing: {path} (prepare with {spec.converter})')
            return report
    stems = _list_images(spec, root, report)
    if stems is None:
        return report
    report.images = len(stems)
    with_mask = [s for s in stems if osp.isfile(osp.join(mask_dir, s + spec.mask_suffix))]
    report.masks = len(with_mask)
    report.images_without_mask = report.images - report.masks
    if not stems:
        report.problems.append(f"no '*{spec.img_suffix}' images in {img_dir}")
    if report.images_without_mask:
        masked = set(with_mask)
        missing = next(s for s in stems if s not in masked)
        report.problems.append(f'{report.images_without_mask} images have no mask '
                               f'(first: {missing}{spec.mask_suffix})')
    _check_masks(spec, img_dir, mask_dir, with_mask, max_masks, report)
    if report.images and report.images != spec.expected_images:
        report.notes.append(f'{report.images} images; the full split has {spec.expected_images}')
    report.status = 'problems' if report.problems else 'ready'
    return report


def resolve_roots(names: Iterable[str], data_root: Optional[str],
                  from_configs: bool, config_dir: Optional[str] = None) -> Dict[str, str]:
    """Data root of each benchmark: under ``data_root``, from the dataset base configs (the packaged ones, or
    those under ``config_dir``), or under ``data/`` of the current directory (where ``tools/test.py`` reads the
    configs' relative data roots from). A benchmark whose registered root is absolute keeps it."""
    roots: Dict[str, str] = {}
    for name in names:
        spec = BENCHMARKS[name]
        if from_configs:
            from mmengine import Config
            path = (osp.join(config_dir, '_base_', 'datasets', f'{spec.name}.py') if config_dir
                    else str(config_path(spec.config)))
            cfg = Config.fromfile(path, import_custom_modules=False)
            roots[name] = cfg.test_dataloader.dataset.data_root
        elif osp.isabs(spec.data_root):
            roots[name] = spec.data_root
        else:
            base = data_root if data_root is not None else 'data'
            # Spec roots are 'data/<sub>'; keep <sub> under the chosen base folder.
            head, _, sub = spec.data_root.partition('/')
            roots[name] = osp.join(base, sub) if head == 'data' and sub else osp.join(base, spec.data_root)
    return roots


def format_table(reports: Sequence[Report]) -> str:
    headers = ('benchmark', 'status', 'images', 'masks', 'no mask', 'labels seen', 'allowed',
               'data root')
    def count(r: Report, n: int) -> str:
        return '-' if r.status == 'missing' else str(n)

    rows = [(r.name, r.status, count(r, r.images), count(r, r.masks),
             count(r, r.images_without_mask), compact(r.labels_seen) or '-', r.allowed,
             r.data_root) for r in reports]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    lines = ['  '.join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
             for row in (headers, tuple('-' * w for w in widths), *rows)]
    for r in reports:
        kind = 'missing' if r.status == 'missing' else 'problem'
        for problem in r.problems:
            lines.append(f'{r.name}: {kind}: {problem}')
        for note in r.notes:
            lines.append(f'{r.name}: note: {note}')
    return '\n'.join(lines)
