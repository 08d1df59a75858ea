"""The dataset classes mmseg 1.2.2 lacks, and data-root checks with one-line errors.

The benchmarks themselves (titles, folders, label conventions) are in :mod:`fsa_seg.benchmarks`.
mmseg 1.2.2 already provides ``PascalVOCDataset``, ``PascalContextDataset`` (60
classes, background = 0, ``reduce_zero_label=False``), ``PascalContextDataset59``
(``reduce_zero_label=True``), ``COCOStuffDataset``, ``CityscapesDataset`` and
``ADE20KDataset``; their class tuples and label conventions match the released FSA
configs, so only VOC20 and COCO-Object are added here, and ADE20K-847 and PASCAL-Context-459
with :class:`LoadUInt16Annotations` for their 16-bit masks (mmseg's ``LoadAnnotations`` casts
masks to uint8, which would wrap class ids above 255 and the ignore value 65535).

:func:`check_data_root` validates a dataset config before a runner is built, with
a one-line error that says how to fix it (mmseg's own errors are an assertion on
``ann_file`` or a bare ``os.scandir`` failure).
"""
from __future__ import annotations

import io
import os
import os.path as osp
from typing import Any, Iterator, List, Mapping, Optional

import mmengine.fileio as fileio
import numpy as np
from PIL import Image
from mmseg.datasets import BaseSegDataset, COCOStuffDataset, PascalVOCDataset
from mmseg.datasets.transforms import LoadAnnotations
from mmseg.registry import DATASETS, TRANSFORMS

from ..benchmarks import BENCHMARKS, benchmark_for_dataset_type
from ..class_names import load_class_names

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



def _class_file_metainfo(benchmark: str) -> dict:
    # One query per line in these files: the line is the class name (as in the released METAINFO).
    # No palette: mmseg draws a fixed random one (seed 42) for visualisation.
    words, _ = load_class_names(BENCHMARKS[benchmark].class_names)
    return dict(classes=tuple(words))


@DATASETS.register_module()
class ADE20K847Dataset(_CheckedPathsMixin, BaseSegDataset):
    """ADE20K-847 (ADE20K-full, Zhou et al., CVPR 2017) validation, 2000 images, 847 classes.

    CAT-Seg's preparation (``tools/dataset_converters/ade847.py``): ``images_detectron2/validation/*.jpg``
    and ``annotations_detectron2/validation/*.tif`` (uint16 class ids 0..846, 65535 unlabeled) with
    ``validation.txt`` listing the ids. Load masks with :class:`LoadUInt16Annotations` and evaluate with
    ``ignore_index=65535``.
    """

    METAINFO = _class_file_metainfo('ade847')
    benchmark = 'ade847'

    def __init__(self, ann_file: str = 'validation.txt', img_suffix: str = '.jpg', seg_map_suffix: str = '.tif',
                 reduce_zero_label: bool = False, **kwargs: Any) -> None:
        super().__init__(ann_file=ann_file, img_suffix=img_suffix, seg_map_suffix=seg_map_suffix,
                         reduce_zero_label=reduce_zero_label, **kwargs)


@DATASETS.register_module()
class PascalContext459Dataset(_CheckedPathsMixin, BaseSegDataset):
    """PASCAL-Context with its full 459 labels (Mottaghi et al., CVPR 2014), the 5105 val images.

    ``annotations_detectron2/pc459_val/<id>.tif`` from ``tools/dataset_converters/pascal_context459.py``:
    uint16 label id - 1 (0..458), 65535 unlabeled. Load masks with :class:`LoadUInt16Annotations` and
    evaluate with ``ignore_index=65535``.
    """

    METAINFO = _class_file_metainfo('context459')
    benchmark = 'context459'

    def __init__(self, ann_file: str, img_suffix: str = '.jpg', seg_map_suffix: str = '.tif',
                 reduce_zero_label: bool = False, **kwargs: Any) -> None:
        super().__init__(ann_file=ann_file, img_suffix=img_suffix, seg_map_suffix=seg_map_suffix,
                         reduce_zero_label=reduce_zero_label, **kwargs)


@TRANSFORMS.register_module()
class LoadUInt16Annotations(LoadAnnotations):
    """mmseg's ``LoadAnnotations`` for masks with more than 256 values (16-bit TIFF/PNG, e.g. ADE20K-847 and
    PASCAL-Context-459): the mask keeps its integer values (as the released ``MyLoadAnnotations``, which casts
    to uint16) instead of being cast to uint8. ``reduce_zero_label`` is not supported (these masks store
    class ids from 0 and their own ignore value)."""

    def __init__(self, reduce_zero_label: Optional[bool] = False, backend_args: Optional[dict] = None) -> None:
        if reduce_zero_label:
            raise ValueError('LoadUInt16Annotations does not support reduce_zero_label=True')
        super().__init__(reduce_zero_label=None, backend_args=backend_args, imdecode_backend='pillow')
        self.reduce_zero_label = False

    def _load_seg_map(self, results: dict) -> None:
        if results.get('reduce_zero_label'):
            raise ValueError('LoadUInt16Annotations: the dataset has reduce_zero_label=True, which 16-bit '
                             'masks do not use')
        data = fileio.get(results['seg_map_path'], backend_args=self.backend_args)
        with Image.open(io.BytesIO(data)) as img:  # Pillow keeps I;16 TIFF/PNG values as they are
            label = np.array(img)
        if label.ndim == 3 and label.shape[2] == 1:
            label = label[..., 0]
        if label.ndim != 2 or not np.issubdtype(label.dtype, np.integer) or label.max(initial=0) > 65535:
            raise ValueError(f"{results['seg_map_path']}: expected a single-channel integer label map "
                             f'(got shape {label.shape}, dtype {label.dtype})')
        label = label.astype(np.uint16)
        if results.get('label_map') is not None:  # custom class subsets, as mmseg does
            source = label.copy()
            for old_id, new_id in results['label_map'].items():
                label[source == old_id] = new_id
        results['gt_seg_map'] = label
        results['seg_fields'].append('gt_seg_map')
