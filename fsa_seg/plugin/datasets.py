"""The dataset classes mmseg 1.2.2 lacks, and data-root checks with one-line errors.

The benchmarks themselves (titles, folders, label conventions) are in :mod:`fsa_seg.benchmarks`.
mmseg 1.2.2 already provides ``PascalVOCDataset``, ``PascalContextDataset`` (60
classes, background = 0, ``reduce_zero_label=False``), ``PascalContextDataset59``
(``reduce_zero_label=True``), ``COCOStuffDataset``, ``CityscapesDataset`` and
``ADE20KDataset``; their class tuples and label conventions match the released FSA
configs, so only VOC20 and COCO-Object are added here.

:func:`check_data_root` validates a dataset config before a runner is built, with
a one-line error that says how to fix it (mmseg's own errors are an assertion on
``ann_file`` or a bare ``os.scandir`` failure).
"""
from __future__ import annotations

import os
import os.path as osp
from typing import Any, Iterator, List, Mapping, Optional

from mmseg.datasets import BaseSegDataset, COCOStuffDataset, PascalVOCDataset
from mmseg.registry import DATASETS

from ..benchmarks import BENCHMARKS, benchmark_for_dataset_type

README_HINT = 'data/README.md'


def _display(path: str) -> str:
    """``path`` as written, plus its absolute form when it is relative (cwd-dependent)."""
    if osp.isabs(path):
        return f"'{path}'"
    return f"'{path}' (= {osp.abspath(path)})"


def _missing(label: str, what: str, path: str, root_name: str) -> FileNotFoundError:
    return FileNotFoundError(
        f'{label}: {what} {_display(path)} not found. Prepare it as described in '
        f'{README_HINT}, or point to it with --cfg-options '
        f'test_dataloader.dataset.data_root=/path/to/{root_name}')


def _iter_files(root: str, suffix: str) -> Iterator[str]:
    """Yield files under ``root`` (recursively, like mmseg) whose name ends with ``suffix``."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        for name in sorted(filenames):
            if name.endswith(suffix):
                yield osp.join(dirpath, name)


def _check_paths(label: str, root_name: str, data_root: Optional[str],
                 img_dir: Optional[str], mask_dir: Optional[str],
                 ann_file: Optional[str], img_suffix: Optional[str]) -> None:
    """Raise a one-line ``FileNotFoundError`` for the first missing input (paths joined)."""
    if data_root and not osp.isdir(data_root):
        raise _missing(label, 'data root', data_root, root_name)
    if img_dir is not None and not osp.isdir(img_dir):
        raise _missing(label, 'image folder', img_dir, root_name)
    if mask_dir is not None and not osp.isdir(mask_dir):
        raise _missing(label, 'annotation folder', mask_dir, root_name)
    if ann_file:
        if not osp.isfile(ann_file):
            raise _missing(label, 'split file (ann_file)', ann_file, root_name)
        with open(ann_file, encoding='utf-8') as f:
            if not any(line.strip() for line in f):
                raise FileNotFoundError(
                    f'{label}: split file (ann_file) {_display(ann_file)} lists no '
                    f'images; see {README_HINT}')
    elif img_dir is not None and img_suffix:
        # Without a split file mmseg lists the folder; an empty listing would only
        # fail later, inside the runner, with an unrelated message.
        if next(_iter_files(img_dir, img_suffix), None) is None:
            raise FileNotFoundError(
                f"{label}: no '*{img_suffix}' images in image folder {_display(img_dir)}; "
                f'see {README_HINT}')


def _join(data_root: Optional[str], path: Optional[str]) -> Optional[str]:
    if path is None:
        return None
    if data_root and not osp.isabs(path):
        return osp.join(data_root, path)
    return path


def check_data_root(dataset_cfg: Mapping[str, Any], benchmark: Optional[str] = None) -> None:
    """Check that a dataset config's data root, folders and split file exist.

    Meant for ``tools/test.py`` before the runner is built, e.g.
    ``check_data_root(cfg.test_dataloader.dataset)``.

    Args:
        dataset_cfg: an mmseg dataset config (``type``, ``data_root``,
            ``data_prefix=dict(img_path=..., seg_map_path=...)``, ``ann_file``).
        benchmark: benchmark name for the message; inferred from ``type`` if omitted.

    Raises:
        FileNotFoundError: one line naming the benchmark, the missing path,
            ``data/README.md`` and the ``--cfg-options ...data_root=`` override.
    """
    spec = BENCHMARKS.get(benchmark or '') or benchmark_for_dataset_type(
        dataset_cfg.get('type'))
    if spec is not None:
        label = f'{spec.title} [{spec.name}]'
    else:
        label = benchmark or str(dataset_cfg.get('type', 'dataset'))
    data_root = dataset_cfg.get('data_root') or None
    prefix = dataset_cfg.get('data_prefix') or {}
    img_suffix = dataset_cfg.get('img_suffix') or (spec.img_suffix if spec else None)
    root_name = osp.basename(osp.normpath(data_root)) if data_root else 'data_root'
    _check_paths(label, root_name, data_root,
                 _join(data_root, prefix.get('img_path')),
                 _join(data_root, prefix.get('seg_map_path')),
                 _join(data_root, dataset_cfg.get('ann_file') or None),
                 img_suffix)


class _CheckedPathsMixin:
    """Check the joined paths before mmseg lists the data (one-line errors)."""

    benchmark: str = ''

    def load_data_list(self) -> List[dict]:
        spec = BENCHMARKS[self.benchmark]
        data_root = getattr(self, 'data_root', None) or None
        root_name = osp.basename(osp.normpath(data_root)) if data_root else 'data_root'
        prefix = self.data_prefix  # already joined with data_root by mmengine
        _check_paths(f'{spec.title} [{spec.name}]', root_name, data_root,
                     prefix.get('img_path'), prefix.get('seg_map_path'),
                     self.ann_file or None, self.img_suffix)
        return super().load_data_list()  # type: ignore[misc]


def _voc20_metainfo() -> dict:
    # VOC without its background entry: label k of a VOC mask becomes k - 1.
    voc = PascalVOCDataset.METAINFO
    return dict(classes=tuple(voc['classes'][1:]), palette=[list(c) for c in voc['palette'][1:]])


def _coco_object_metainfo() -> dict:
    # COCO-Stuff lists the 80 things first, in the converter's trainId order.
    stuff = COCOStuffDataset.METAINFO
    return dict(classes=('background',) + tuple(stuff['classes'][:80]),
                palette=[[0, 0, 0]] + [list(c) for c in stuff['palette'][:80]])


@DATASETS.register_module()
class PascalVOC20Dataset(_CheckedPathsMixin, BaseSegDataset):
    """PASCAL VOC 2012 without background (VOC20 of the open-vocabulary protocol).

    Masks are the VOC ``SegmentationClass`` PNGs (0 background, 1..20, 255 boundary);
    ``reduce_zero_label=True`` ignores background and shifts classes to 0..19.
    """

    METAINFO = _voc20_metainfo()
    benchmark = 'voc20'

    def __init__(self, ann_file: str, img_suffix: str = '.jpg', seg_map_suffix: str = '.png',
                 reduce_zero_label: bool = True, **kwargs: Any) -> None:
        super().__init__(ann_file=ann_file, img_suffix=img_suffix,
                         seg_map_suffix=seg_map_suffix,
                         reduce_zero_label=reduce_zero_label, **kwargs)


@DATASETS.register_module()
class COCOObjectDataset(_CheckedPathsMixin, BaseSegDataset):
    """COCO-Object (GroupViT/TCL protocol): background + the 80 COCO thing classes.

    Masks are ``<id>_instanceTrainIds.png`` from ``tools/dataset_converters/coco_object.py``:
    0 background (every stuff class), 1..80 things, 255 ignore.
    """

    METAINFO = _coco_object_metainfo()
    benchmark = 'coco_object'

    def __init__(self, img_suffix: str = '.jpg', seg_map_suffix: str = '_instanceTrainIds.png',
                 reduce_zero_label: bool = False, **kwargs: Any) -> None:
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix,
                         reduce_zero_label=reduce_zero_label, **kwargs)

