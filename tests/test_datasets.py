"""Dataset classes, dataset configs and data-root checks on tiny generated benchmarks."""
import os.path as osp
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import fsa_seg.plugin  # noqa: F401  (registers the datasets mmseg lacks, the metric)
from fsa_seg.benchmarks import BENCHMARKS
from fsa_seg.class_names import num_classes
from fsa_seg.zoo.experiments import default_config
from fsa_seg.plugin.datasets import check_data_root

mmengine = pytest.importorskip('mmengine')
from mmengine import Config  # noqa: E402
from mmseg.registry import DATASETS, METRICS, TRANSFORMS  # noqa: E402
from mmseg.utils import register_all_modules  # noqa: E402

register_all_modules(init_default_scope=True)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / 'shared' / 'data'
NAMES = list(BENCHMARKS)

# Released FSA per-benchmark model settings (prob_thd; Cityscapes also slides smaller), in the default configs.
RELEASED_MODEL = {
    'voc21': dict(prob_thd=0.2), 'voc20': dict(prob_thd=0.0),
    'context60': dict(prob_thd=0.14), 'context59': dict(prob_thd=0.0),
    'coco_object': dict(prob_thd=0.3), 'coco_stuff164k': dict(prob_thd=0.0),
    'cityscapes': dict(prob_thd=0.0, slide_crop=224, slide_stride=80),
    'ade20k': dict(prob_thd=0.0), 'ade847': dict(prob_thd=0.0), 'context459': dict(prob_thd=0.0),
}
SHORT_SIDE = {name: 448 if name in ('cityscapes', 'ade20k', 'ade847', 'context459') else 336 for name in NAMES}
WIDE = [name for name in NAMES if BENCHMARKS[name].ignore_index == 65535]  # 16-bit TIFF masks


def load_config(name: str) -> Config:
    return Config.fromfile(str(REPO_ROOT / BENCHMARKS[name].config))


def raw_values(name: str) -> list:
    """Mask values written to the generated files: lowest, highest class and ignore (16-bit masks: also 255,
    a class there)."""
    spec = BENCHMARKS[name]
    if spec.ignore_index == 65535:
        return [0, 255, spec.max_raw_label, 65535]
    return [0, 1, spec.max_raw_label, 255]


def make_benchmark(name: str, root: Path, n: int = 2, size=(24, 40)) -> list:
    """Write ``n`` images and masks in the benchmark's layout; returns the stems."""
    spec = BENCHMARKS[name]
    h, w = size
    stems = []
    for k in range(n):
        stem = f'frankfurt/frankfurt_00000{k}_000019' if name == 'cityscapes' else f'img_{k:04d}'
        stems.append(stem)
        img_path = root / spec.img_dir / (stem + spec.img_suffix)
        mask_path = root / spec.mask_dir / (stem + spec.mask_suffix)
        img_path.parent.mkdir(parents=True, exist_ok=True)
        mask_path.parent.mkdir(parents=True, exist_ok=True)
        rgb = np.random.default_rng(k).integers(0, 255, (h, w, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(img_path, format='PNG' if spec.img_suffix.endswith('.png')
                                  else 'JPEG')
        mask = np.zeros((h, w), np.uint16 if spec.ignore_index == 65535 else np.uint8)
        for j, value in enumerate(raw_values(name)):
            mask[:, j * w // 4:(j + 1) * w // 4] = value
        if mask.dtype == np.uint16:
            Image.fromarray(mask).save(mask_path, format='TIFF')
        else:
            Image.fromarray(mask, mode='L').save(mask_path)
    if spec.ann_file:
        ann = root / spec.ann_file
        ann.parent.mkdir(parents=True, exist_ok=True)
        ann.write_text(''.join(f'{s}\n' for s in stems))
    return stems


def build_dataset(name: str, data_root: Path):
    cfg = load_config(name)
    dataset_cfg = cfg.test_dataloader.dataset
    dataset_cfg.data_root = str(data_root)
    return DATASETS.build(dataset_cfg)


def expected_labels(name: str) -> list:
    """What the pipeline must produce from :func:`raw_values` (reduce_zero_label applied)."""
    values = raw_values(name)
    if BENCHMARKS[name].reduce_zero_label:
        values = [255 if v in (0, 255) else v - 1 for v in values]
    return sorted(set(values))


# ----------------------------------------------------------------------------- metadata


def test_new_classes_registered():
    voc20 = DATASETS.get('PascalVOC20Dataset')
    coco_object = DATASETS.get('COCOObjectDataset')
    assert voc20.METAINFO['classes'][0] == 'aeroplane'
    assert voc20.METAINFO['classes'][-1] == 'tvmonitor'
    assert coco_object.METAINFO['classes'][:3] == ('background', 'person', 'bicycle')
    assert coco_object.METAINFO['classes'][-1] == 'toothbrush'
    for cls in (voc20, coco_object):
        assert len(cls.METAINFO['palette']) == len(cls.METAINFO['classes'])


@pytest.mark.parametrize('name', NAMES)
def test_class_tuple_matches_class_name_file(name):
    spec = BENCHMARKS[name]
    classes = DATASETS.get(spec.dataset_type).METAINFO['classes']
    assert len(classes) == spec.num_classes == num_classes(spec.class_names)


def test_context_classes_match_released_protocol():
    # mmseg's Context datasets are used as they are: 60 with background, 59 without.
    ctx60 = DATASETS.get('PascalContextDataset').METAINFO['classes']
    ctx59 = DATASETS.get('PascalContextDataset59').METAINFO['classes']
    assert ctx60[0] == 'background' and tuple(ctx60[1:]) == tuple(ctx59)


@pytest.mark.parametrize('name', NAMES)
def test_config_matches_spec_and_release(name):
    spec, cfg = BENCHMARKS[name], load_config(name)
    ds = cfg.test_dataloader.dataset
    assert ds.type == spec.dataset_type and ds.data_root == spec.data_root
    assert ds.data_prefix == dict(img_path=spec.img_dir, seg_map_path=spec.mask_dir)
    assert ds.get('ann_file') == spec.ann_file
    model = Config.fromfile(default_config(name)).model
    assert model.name_path == spec.class_names
    for key, value in RELEASED_MODEL[name].items():
        assert model[key] == value, key
    if name != 'cityscapes':
        assert (model.slide_crop, model.slide_stride) == (336, 112)
    steps = [t.type for t in cfg.test_pipeline]
    loader = 'LoadUInt16Annotations' if name in WIDE else 'LoadAnnotations'
    assert steps == ['LoadImageFromFile', 'Resize', loader, 'PackSegInputs']
    assert cfg.test_pipeline[0].color_type == 'color'
    assert cfg.test_pipeline[1].scale == (2048, SHORT_SIDE[name])
    assert cfg.test_pipeline[1].keep_ratio is True
    assert cfg.test_pipeline[2].get('reduce_zero_label') in (None, spec.reduce_zero_label)
    loader = cfg.test_dataloader
    assert (loader.batch_size, loader.num_workers, loader.persistent_workers) == (1, 2, False)
    assert loader.sampler == dict(type='DefaultSampler', shuffle=False)
    # The evaluator: mIoU with per-class numbers and resumable per-image records (16-bit masks: 65535 ignored).
    extra = dict(ignore_index=65535) if name in WIDE else {}
    assert cfg.test_evaluator == dict(type='PerClassIoUMetric', iou_metrics=['mIoU'], **extra)
    assert METRICS.get(cfg.test_evaluator.type) is not None
    assert 'model' not in cfg  # the dataset only: model and protocol come from their own bases


# ------------------------------------------------------------------- loading generated data


@pytest.mark.parametrize('name', NAMES)
def test_generated_benchmark_loads_through_config(name, tmp_path):
    stems = make_benchmark(name, tmp_path)
    check_data_root(dict(load_config(name).test_dataloader.dataset, data_root=str(tmp_path)))
    dataset = build_dataset(name, tmp_path)
    assert len(dataset) == len(stems)
    assert dataset.reduce_zero_label == BENCHMARKS[name].reduce_zero_label
    sample = dataset[0]
    img = sample['inputs']
    short = SHORT_SIDE[name]
    assert tuple(img.shape) == (3, short, round(40 * short / 24))
    gt = sample['data_samples'].gt_sem_seg.data
    assert tuple(gt.shape) == (1, 24, 40)  # ground truth keeps the original size
    assert sorted(np.unique(gt.numpy()).tolist()) == expected_labels(name)
    assert osp.basename(sample['data_samples'].img_path).startswith(osp.basename(stems[0]))


@pytest.mark.parametrize('name', WIDE)
def test_16bit_masks_keep_their_values(name, tmp_path):
    make_benchmark(name, tmp_path)
    gt = build_dataset(name, tmp_path)[0]['data_samples'].gt_sem_seg.data.numpy()[0]
    # mmseg's LoadAnnotations would wrap these through uint8 (846 -> 78, 65535 -> 255).
    top = BENCHMARKS[name].num_classes - 1
    assert [int(gt[0, c]) for c in (0, 10, 20, 30)] == [0, 255, top, 65535]


def test_16bit_loader_refuses_reduce_zero_label_and_colour_masks(tmp_path):
    with pytest.raises(ValueError, match='does not support reduce_zero_label'):
        TRANSFORMS.build(dict(type='LoadUInt16Annotations', reduce_zero_label=True))
    Image.new('RGB', (4, 3)).save(tmp_path / 'rgb.png')
    load = TRANSFORMS.build(dict(type='LoadUInt16Annotations'))
    with pytest.raises(ValueError, match='single-channel integer label map'):
        load({'seg_map_path': str(tmp_path / 'rgb.png'), 'seg_fields': [], 'reduce_zero_label': False})


@pytest.mark.parametrize('name', WIDE)
def test_16bit_benchmarks_evaluate_class_255_and_ignore_65535(name):
    """The configs' metric: class 255 is a class, 65535 is not evaluated (IoUMetric's default 255 would
    instead drop class 255 and count the prediction on the unlabeled pixel)."""
    import torch

    cfg = load_config(name)
    metric = METRICS.build(cfg.test_evaluator)
    metric.dataset_meta = dict(classes=DATASETS.get(BENCHMARKS[name].dataset_type).METAINFO['classes'])
    gt = torch.tensor([[255, 255, 65535, 3]])
    pred = torch.tensor([[255, 0, 7, 3]])
    metric.process({}, [dict(pred_sem_seg=dict(data=pred), gt_sem_seg=dict(data=gt), img_path='a.jpg')])
    metric.compute_metrics(metric.results)
    per_class = metric.per_class
    names = metric.dataset_meta['classes']
    assert per_class[names[255]]['IoU'] == pytest.approx(50.0)   # 1 of {255, 255 | pred 255}
    assert per_class[names[3]]['IoU'] == pytest.approx(100.0)
    assert per_class[names[0]]['IoU'] == pytest.approx(0.0)     # predicted on a class-255 pixel
    assert per_class[names[7]]['IoU'] is None or np.isnan(per_class[names[7]]['IoU'])  # only on 65535


def test_voc20_shifts_classes_and_ignores_background(tmp_path):
    make_benchmark('voc20', tmp_path)
    gt = build_dataset('voc20', tmp_path)[0]['data_samples'].gt_sem_seg.data.numpy()[0]
    # Columns: raw 0 (background) -> 255, raw 1 -> 0, raw 20 -> 19, raw 255 -> 255.
    assert [int(gt[0, c]) for c in (0, 10, 20, 30)] == [255, 0, 19, 255]


@pytest.mark.parametrize('mode', ['L', 'RGBA', 'P', 'LA', 'I;16', 'CMYK'])
def test_image_modes_load_as_three_channels(tmp_path, mode):
    load = TRANSFORMS.build(load_config('voc21').test_pipeline[0])
    if mode == 'I;16':
        img = Image.fromarray(np.full((10, 12), 4000, np.uint16))
    else:
        img = Image.new(mode, (12, 10))
    suffix = '.jpg' if mode in ('L', 'CMYK') else '.png'
    path = tmp_path / f'img{suffix}'
    img.save(path)
    out = load({'img_path': str(path)})['img']
    assert out.shape == (10, 12, 3) and out.dtype == np.uint8


def test_grayscale_and_rgba_images_through_dataset(tmp_path):
    stems = make_benchmark('voc21', tmp_path)
    Image.new('L', (40, 24), 128).save(tmp_path / 'JPEGImages' / f'{stems[0]}.jpg')
    gray = build_dataset('voc21', tmp_path)[0]['inputs']
    assert tuple(gray.shape) == (3, 336, 560)
    assert bool((gray[0] == gray[1]).all() and (gray[1] == gray[2]).all())

    city = tmp_path / 'city'
    stems = make_benchmark('cityscapes', city)
    spec = BENCHMARKS['cityscapes']
    rgba_path = city / spec.img_dir / (stems[0] + spec.img_suffix)
    Image.new('RGBA', (40, 24), (10, 20, 30, 0)).save(rgba_path)
    rgba = build_dataset('cityscapes', city)[0]['inputs']
    assert tuple(rgba.shape) == (3, 448, 747)


# --------------------------------------------------------------------------- clear errors


def _one_line(err) -> str:
    message = str(err.value)
    assert '\n' not in message
    return message


@pytest.mark.parametrize('name', NAMES)
def test_missing_data_root_message(name, tmp_path):
    dataset_cfg = dict(load_config(name).test_dataloader.dataset, data_root=str(tmp_path / 'nope'))
    with pytest.raises(FileNotFoundError) as err:
        check_data_root(dataset_cfg)
    message = _one_line(err)
    assert 'data root' in message and str(tmp_path / 'nope') in message
    assert 'data/README.md' in message and name in message
    assert '--cfg-options test_dataloader.dataset.data_root=' in message


def test_default_relative_root_message_shows_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as err:
        check_data_root(load_config('ade20k').test_dataloader.dataset)
    message = _one_line(err)
    assert "'data/ade/ADEChallengeData2016'" in message
    assert str(tmp_path / 'data/ade/ADEChallengeData2016') in message
    assert 'ADE20K' in message


@pytest.mark.parametrize('remove, what', [
    ('JPEGImages', 'image folder'),
    ('SegmentationClass', 'annotation folder'),
    ('ImageSets/Segmentation/val.txt', 'split file'),
])
def test_missing_parts_of_voc(tmp_path, remove, what):
    make_benchmark('voc21', tmp_path)
    target = tmp_path / remove
    if target.is_dir():
        for f in target.iterdir():
            f.unlink()
        target.rmdir()
    else:
        target.unlink()
    with pytest.raises(FileNotFoundError) as err:
        check_data_root(dict(load_config('voc21').test_dataloader.dataset, data_root=str(tmp_path)))
    message = _one_line(err)
    assert what in message and str(target) in message


def test_empty_image_folder_and_empty_split(tmp_path):
    spec = BENCHMARKS['ade20k']
    (tmp_path / spec.img_dir).mkdir(parents=True)
    (tmp_path / spec.mask_dir).mkdir(parents=True)
    ade_cfg = dict(load_config('ade20k').test_dataloader.dataset, data_root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"no '\*\.jpg' images"):
        check_data_root(ade_cfg)
    make_benchmark('voc20', tmp_path / 'voc')
    (tmp_path / 'voc' / BENCHMARKS['voc20'].ann_file).write_text('\n')
    with pytest.raises(FileNotFoundError, match='lists no images'):
        check_data_root(dict(load_config('voc20').test_dataloader.dataset,
                             data_root=str(tmp_path / 'voc')))


@pytest.mark.parametrize('name', ['voc20', 'coco_object'])
def test_new_dataset_classes_fail_clearly(name, tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        build_dataset(name, tmp_path / 'missing')
    message = _one_line(err)
    assert 'data/README.md' in message and str(tmp_path / 'missing') in message


def test_unknown_dataset_type_still_checked(tmp_path):
    with pytest.raises(FileNotFoundError, match='MyDataset: data root'):
        check_data_root(dict(type='MyDataset', data_root=str(tmp_path / 'x'),
                             data_prefix=dict(img_path='a', seg_map_path='b')))


# ------------------------------------------------------------------------- real samples


def _shared(sub: str) -> Path:
    path = SHARED_DATA / sub
    if not path.is_dir():
        pytest.skip(f'{path} not available')
    return path


@pytest.mark.parametrize('name', ['voc21', 'voc20'])
def test_real_voc_samples(name):
    root = _shared('voc_mini')
    ids = (root / 'ImageSets/Segmentation/val.txt').read_text().split()
    dataset = build_dataset(name, root)
    assert len(dataset) == len(ids) > 0
    for k in (0, len(dataset) - 1):
        sample = dataset[k]
        assert sample['inputs'].shape[0] == 3 and min(sample['inputs'].shape[1:]) == 336
        values = set(np.unique(sample['data_samples'].gt_sem_seg.data.numpy()).tolist())
        top = 20 if name == 'voc21' else 19
        assert values <= set(range(top + 1)) | {255} and len(values) > 1


def test_real_ade_samples():
    root = _shared('ade_mini')
    dataset = build_dataset('ade20k', root)
    assert len(dataset) == len(list((root / 'images/validation').glob('*.jpg'))) > 0
    sample = dataset[0]
    assert sample['inputs'].shape[0] == 3 and min(sample['inputs'].shape[1:]) == 448
    raw = np.array(Image.open(root / 'annotations/validation' / (
        Path(sample['data_samples'].img_path).stem + '.png')))
    gt = sample['data_samples'].gt_sem_seg.data.numpy()[0]
    # reduce_zero_label: raw 0 -> 255, raw k -> k - 1.
    assert ((gt == 255) == (raw == 0)).all()
    assert (gt[raw > 0] == raw[raw > 0] - 1).all()
