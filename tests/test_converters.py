"""Dataset converters on tiny generated inputs: layout, label values and clear errors."""
import importlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fsa_seg.converters import common

REPO_ROOT = Path(__file__).resolve().parents[1]
CONVERTERS = REPO_ROOT / 'tools' / 'dataset_converters'  # their command lines


def converter(name: str):
    return importlib.import_module(f'fsa_seg.converters.{name}')


def save_label(path: Path, values, mode='L') -> np.ndarray:
    """A 2 x len(values) label map whose columns hold ``values``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.array([values, values], dtype=np.uint8)
    if mode == 'P':
        img = Image.fromarray(arr, mode='P')
        img.putpalette([c for k in range(256) for c in (k, 255 - k, k // 2)])
    else:
        img = Image.fromarray(arr, mode=mode)
    img.save(path)
    return arr


def save_image(path: Path, width: int, height: int = 2) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = 'PNG' if path.suffix == '.png' else 'JPEG'
    Image.new('RGB', (width, height), (90, 120, 30)).save(path, format=fmt)


def read(path: Path) -> list:
    return np.array(Image.open(path))[0].tolist()


def expect_exit(match: str, func, *args):
    with pytest.raises(SystemExit) as err:
        func(*args)
    message = str(err.value)
    assert message.startswith('error: ') and '\n' not in message and match in message, message
    return message


# --------------------------------------------------------------------------- common


def test_lut_maps_out_of_table_values_to_ignore():
    lut = common.make_lut({1: 7, 3: 9}, default=0, size=4)
    label = np.array([[0, 1, 2, 3, 4, 500]], dtype=np.uint16)
    assert common.apply_lut(label, lut).tolist() == [[0, 7, 0, 9, 255, 255]]


def test_coco_stuff_train_ids():
    ids = common.coco_stuff_train_ids()
    assert len(ids) == 171 and sorted(ids.values()) == list(range(171))
    assert (ids[0], ids[10], ids[12], ids[89], ids[91], ids[181]) == (0, 10, 11, 79, 80, 170)
    assert not set(common.COCO_UNUSED_IDS) & set(ids)


def test_read_label_rejects_colour_masks(tmp_path):
    path = tmp_path / 'rgb.png'
    Image.new('RGB', (3, 3)).save(path)
    expect_exit('colour (RGB)', common.read_label, str(path))


# ------------------------------------------------------------------------------- COCO


COCO_RAW = [0, 11, 12, 89, 90, 91, 181, 255]  # 11 and 90 are unused ids


def make_coco_stuff(root: Path, stem='000000000139') -> None:
    save_image(root / 'images' / 'val2017' / f'{stem}.jpg', len(COCO_RAW))
    save_label(root / 'annotations' / 'val2017' / f'{stem}.png', COCO_RAW)


def test_coco_stuff164k_in_place(tmp_path):
    make_coco_stuff(tmp_path)
    converter('coco_stuff164k').main([str(tmp_path)])
    out = tmp_path / 'annotations' / 'val2017' / '000000000139_labelTrainIds.png'
    assert read(out) == [0, 255, 11, 79, 255, 80, 170, 255]
    # A second run skips converter outputs in the same folder.
    converter('coco_stuff164k').main([str(tmp_path)])
    assert sorted(p.name for p in out.parent.iterdir()) == [
        '000000000139.png', '000000000139_labelTrainIds.png']


def test_coco_object_released_semantics(tmp_path):
    src, out = tmp_path / 'coco_stuff164k', tmp_path / 'coco_object'
    make_coco_stuff(src)
    converter('coco_object').main([str(src), '-o', str(out), '--nproc', '2'])
    mask = out / 'annotations' / 'val2017' / '000000000139_instanceTrainIds.png'
    # things -> trainId + 1, stuff -> 0, unlabeled 255 -> background 0 (as released).
    assert read(mask) == [1, 255, 12, 80, 255, 0, 0, 0]
    images = out / 'images' / 'val2017'
    assert images.is_symlink() and (images / '000000000139.jpg').is_file()


def test_coco_object_unlabeled_ignore(tmp_path):
    make_coco_stuff(tmp_path)
    converter('coco_object').main([str(tmp_path), '--unlabeled', 'ignore'])
    mask = tmp_path / 'annotations' / 'val2017' / '000000000139_instanceTrainIds.png'
    assert read(mask) == [1, 255, 12, 80, 255, 0, 0, 255]


def test_coco_errors(tmp_path):
    expect_exit('COCO-Stuff164k root', converter('coco_object').main, [str(tmp_path / 'x')])
    (tmp_path / 'images' / 'val2017').mkdir(parents=True)
    expect_exit('annotation folder', converter('coco_stuff164k').main, [str(tmp_path)])
    (tmp_path / 'annotations' / 'val2017').mkdir(parents=True)
    expect_exit('no raw stuffthingmaps', converter('coco_stuff164k').main, [str(tmp_path)])


# ------------------------------------------------------------------------- Cityscapes


def make_cityscapes(root: Path, with_label=True) -> str:
    stem = 'frankfurt/frankfurt_000000_000294'
    save_image(root / 'leftImg8bit' / 'val' / f'{stem}_leftImg8bit.png', 6)
    if with_label:
        save_label(root / 'gtFine' / 'val' / f'{stem}_gtFine_labelIds.png', [0, 6, 7, 24, 33, 34])
    return stem


def test_cityscapes(tmp_path):
    src, out = tmp_path / 'src', tmp_path / 'out'
    stem = make_cityscapes(src)
    converter('cityscapes').main([str(src), '-o', str(out)])
    assert read(out / 'gtFine' / 'val' / f'{stem}_gtFine_labelTrainIds.png') == [
        255, 255, 0, 11, 18, 255]
    assert (out / 'leftImg8bit' / 'val').is_symlink()


def test_cityscapes_errors(tmp_path):
    expect_exit('gtFine/val', converter('cityscapes').main, [str(tmp_path)])
    make_cityscapes(tmp_path, with_label=False)
    (tmp_path / 'gtFine' / 'val').mkdir(parents=True)
    expect_exit('_gtFine_labelIds.png', converter('cityscapes').main, [str(tmp_path)])
    make_cityscapes(tmp_path)
    save_image(tmp_path / 'leftImg8bit' / 'val' / 'bonn' / 'bonn_0_leftImg8bit.png', 6)
    expect_exit('1 of 2 images', converter('cityscapes').main, [str(tmp_path)])


# --------------------------------------------------------------------- PASCAL-Context


def make_voc2010(root: Path, mat_dir: Path, ids=('2008_000002', '2008_000003')) -> None:
    scipy_io = pytest.importorskip('scipy.io')
    main_dir = root / 'ImageSets' / 'Main'
    main_dir.mkdir(parents=True)
    (main_dir / 'val.txt').write_text(''.join(f'{i}\n' for i in ids) + '2010_999999\n')
    (main_dir / 'train.txt').write_text('')
    mat_dir.mkdir(parents=True)
    for i in ids:
        save_image(root / 'JPEGImages' / f'{i}.jpg', 6)
        label = np.array([[0, 2, 3, 284, 458, 459]] * 2, dtype=np.uint16)
        scipy_io.savemat(str(mat_dir / f'{i}.mat'), {'LabelMap': label})


def test_pascal_context(tmp_path):
    src, mats, out = tmp_path / 'VOC2010', tmp_path / 'trainval', tmp_path / 'out'
    make_voc2010(src, mats)
    converter('pascal_context').main([str(src), '--mat-dir', str(mats), '-o', str(out)])
    # 0 and non-59 classes (3 = air conditioner, 459) -> 0; aeroplane 1, person 37, wood 59.
    assert read(out / 'SegmentationClassContext' / '2008_000002.png') == [0, 1, 0, 37, 59, 0]
    split = out / 'ImageSets' / 'SegmentationContext' / 'val.txt'
    assert split.read_text().split() == ['2008_000002', '2008_000003']  # only ids with .mat
    assert (out / 'JPEGImages').is_symlink()


def test_pascal_context_label_order_matches_class_names():
    from fsa_seg.class_names import load_class_names
    ids = converter('pascal_context').CONTEXT59_LABEL_IDS
    names, _ = load_class_names('context59')
    assert sorted(ids, key=ids.get) == names  # label k+1 <-> line k of context59.txt
    lut = converter('pascal_context').context_lut()
    assert lut[ids['aeroplane']] == 1 and lut[ids['wood']] == 59 and lut[1] == 0


def test_pascal_context_errors(tmp_path):
    pytest.importorskip('scipy.io')
    main = converter('pascal_context').main
    expect_exit('VOC2010 folder (SRC)', main, [str(tmp_path / 'none')])
    (tmp_path / 'JPEGImages').mkdir()
    expect_exit('--mat-dir', main, [str(tmp_path)])
    (tmp_path / 'trainval').mkdir()
    expect_exit("no '*.mat' files", main, [str(tmp_path)])


def test_pascal_context459(tmp_path):
    src, mats, out = tmp_path / 'VOC2010', tmp_path / 'trainval', tmp_path / 'out'
    make_voc2010(src, mats)
    converter('pascal_context459').main([str(src), '--mat-dir', str(mats), '-o', str(out)])
    mask = out / 'annotations_detectron2' / 'pc459_val' / '2008_000002.tif'
    label = np.array(Image.open(mask))
    assert label.dtype == np.uint16
    # CAT-Seg / ODISE: label id - 1, unlabeled 0 -> 65535 (aeroplane 1, air conditioner 2, person 283, wood 457).
    assert label[0].tolist() == [65535, 1, 2, 283, 457, 458]
    split = out / 'ImageSets' / 'SegmentationContext' / 'val.txt'
    assert split.read_text().split() == ['2008_000002', '2008_000003']
    assert (out / 'JPEGImages').is_symlink()


def test_pascal_context459_labels_follow_the_class_file():
    from fsa_seg.class_names import load_class_names
    words, _ = load_class_names('context459')
    lut = converter('pascal_context459').context459_lut()
    ids = converter('pascal_context').CONTEXT59_LABEL_IDS
    assert lut.dtype == np.uint16 and lut[0] == 65535 and lut[459] == 458
    assert words[lut[ids['person']]] == 'person' and words[lut[ids['tvmonitor']]] == 'tvmonitor'


# ------------------------------------------------------------------------- ADE20K-847


def ade_seg_png(path: Path, classes: np.ndarray, seed: int = 0) -> None:
    """An ADE20K *_seg.png: R = (class // 256) * 10 + noise 0..9, G = class % 256, B = instance noise."""
    rng = np.random.default_rng(seed)
    rgb = np.zeros(classes.shape + (3,), np.uint8)
    rgb[..., 0] = (classes // 256) * 10 + rng.integers(0, 10, classes.shape)
    rgb[..., 1] = classes % 256
    rgb[..., 2] = rng.integers(0, 255, classes.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)


def released_ade847_label(classes: np.ndarray) -> np.ndarray:
    """MaskFormer's prepare_ade20k_full_sem_seg.py, after the resize: 65535, then each known id's trainId."""
    id_map = {obj: k for k, obj in enumerate(converter('ade847').ADE847_OBJECT_IDS)}
    output = np.zeros_like(classes, dtype=np.uint16) + 65535
    for obj_id in np.unique(classes):
        if obj_id in id_map:
            output[classes == obj_id] = id_map[obj_id]
    return output


def make_ade_full(root: Path) -> dict:
    """ADE20K_2021_17_01 with two validation images (one large, one small) and a training image."""
    # wall (id 2978 -> 0), building (312 -> 1), pier (id of class 255), adding machine (3148 -> 846),
    # 5 (not one of the 847), 0 (unlabeled).
    ids = converter('ade847').ADE847_OBJECT_IDS
    values = [2978, 312, ids[255], 3148, 5, 0]
    small = np.array([values, values[::-1], values], np.int32)
    large = np.tile(np.repeat(np.array(values, np.int32), 90), (520, 1))[:, :530]
    val = root / 'images' / 'ADE' / 'validation'
    for name, classes in (('abbey/ADE_val_00000002', small), ('bathroom/ADE_val_00000001', large)):
        save_image(val / f'{name}.jpg', classes.shape[1], classes.shape[0])
        ade_seg_png(val / f'{name}_seg.png', classes)
    save_image(root / 'images' / 'ADE' / 'training' / 'abbey' / 'ADE_train_00000001.jpg', 6, 3)
    ade_seg_png(root / 'images' / 'ADE' / 'training' / 'abbey' / 'ADE_train_00000001_seg.png', small)
    return dict(small=small, large=large)


def test_ade847(tmp_path):
    import cv2
    root = tmp_path / 'ADE20K_2021_17_01'
    classes = make_ade_full(root)
    converter('ade847').main([str(tmp_path), '--nproc', '2'])  # the folder holding it is found too
    split = (root / 'validation.txt').read_text().split()
    assert split == ['ADE_val_00000001', 'ADE_val_00000002']  # the training image is not converted
    masks = root / 'annotations_detectron2' / 'validation'
    images = root / 'images_detectron2' / 'validation'
    assert sorted(p.name for p in masks.iterdir()) == ['ADE_val_00000001.tif', 'ADE_val_00000002.tif']

    small = np.array(Image.open(masks / 'ADE_val_00000002.tif'))
    assert small.dtype == np.uint16 and small.shape == (3, 6)
    assert small[0].tolist() == [0, 1, 255, 846, 65535, 65535]
    assert (small == released_ade847_label(classes['small'])).all()
    assert Image.open(images / 'ADE_val_00000002.jpg').size == (6, 3)  # small: size kept

    # 520 x 530: both sides > 512 -> short side 512, long side round(530 / 520 * 512) = 522.
    large = np.array(Image.open(masks / 'ADE_val_00000001.tif'))
    resized = cv2.resize(classes['large'], (522, 512), interpolation=cv2.INTER_NEAREST)
    assert large.shape == (512, 522) and (large == released_ade847_label(resized)).all()
    assert Image.open(images / 'ADE_val_00000001.jpg').size == (522, 512)


def test_ade847_sizes_and_classes():
    ade = converter('ade847')
    assert ade.prepared_size(520, 530) == (512, 522) and ade.prepared_size(700, 600) == (597, 512)
    assert ade.prepared_size(512, 900) is None and ade.prepared_size(300, 200) is None
    seg = np.zeros((1, 2, 3), np.uint8)
    seg[0, 0] = (119, 162, 7)  # (119 // 10) * 256 + 162 = 2978 (wall)
    assert ade.object_classes(seg).tolist() == [[2978, 0]]
    assert len(set(ade.ADE847_OBJECT_IDS)) == 847
    from fsa_seg.class_names import load_class_names
    words, _ = load_class_names('ade847')
    lut = ade.ade847_lut()
    assert words[lut[2978]] == 'wall' and words[lut[3148]] == 'adding machine, totalizer, totaliser'


def test_ade847_errors(tmp_path):
    main = converter('ade847').main
    expect_exit('ADE20K_2021_17_01 folder (SRC)', main, [str(tmp_path / 'none')])
    expect_exit('ADE20K images folder', main, [str(tmp_path)])
    (tmp_path / 'images' / 'ADE' / 'validation').mkdir(parents=True)
    expect_exit("no 'ADE_val_*.jpg' images", main, [str(tmp_path)])
    save_image(tmp_path / 'images' / 'ADE' / 'validation' / 'x' / 'ADE_val_00000001.jpg', 4)
    expect_exit('1 of 1 validation images have no _seg.png', main, [str(tmp_path)])


# ------------------------------------------------------------------------- VOC, ADE20K


def make_voc(root: Path, values=(0, 1, 20, 255), mode='P') -> None:
    (root / 'ImageSets' / 'Segmentation').mkdir(parents=True)
    (root / 'ImageSets' / 'Segmentation' / 'val.txt').write_text('2007_000033\n')
    save_image(root / 'JPEGImages' / '2007_000033.jpg', len(values))
    save_label(root / 'SegmentationClass' / '2007_000033.png', list(values), mode=mode)


def test_voc_check_and_link(tmp_path, capsys):
    make_voc(tmp_path / 'VOCdevkit' / 'VOC2012')
    link = tmp_path / 'data' / 'VOCdevkit' / 'VOC2012'
    converter('voc').main([str(tmp_path / 'VOCdevkit'), '-o', str(link)])
    assert link.is_symlink() and (link / 'JPEGImages' / '2007_000033.jpg').is_file()
    assert 'label values [0, 1, 20, 255]: OK' in capsys.readouterr().err


def test_voc_errors(tmp_path):
    main = converter('voc').main
    expect_exit('VOC2012 JPEGImages', main, [str(tmp_path)])
    make_voc(tmp_path / 'bad_values', values=(0, 21))
    expect_exit('unexpected label values 21', main, [str(tmp_path / 'bad_values')])
    make_voc(tmp_path / 'rgb')
    Image.new('RGB', (4, 2)).save(tmp_path / 'rgb' / 'SegmentationClass' / '2007_000033.png')
    expect_exit('colour (RGB)', main, [str(tmp_path / 'rgb')])
    make_voc(tmp_path / 'no_mask')
    os.remove(tmp_path / 'no_mask' / 'SegmentationClass' / '2007_000033.png')
    expect_exit('1 of 1 masks missing', main, [str(tmp_path / 'no_mask')])


def test_ade20k(tmp_path):
    root = tmp_path / 'ADEChallengeData2016'
    save_image(root / 'images' / 'validation' / 'ADE_val_00000001.jpg', 3)
    save_label(root / 'annotations' / 'validation' / 'ADE_val_00000001.png', [0, 150, 7])
    main = converter('ade20k').main
    main([str(tmp_path), '-o', str(tmp_path / 'data' / 'ade' / 'ADEChallengeData2016')])
    assert (tmp_path / 'data' / 'ade' / 'ADEChallengeData2016').is_symlink()
    save_image(root / 'images' / 'validation' / 'ADE_val_00000002.jpg', 3)
    expect_exit('1 of 2 masks missing', main, [str(root)])
    expect_exit('ADE20K images/validation', main, [str(tmp_path / 'data')])


# ---------------------------------------------------------------------- CLI + end-to-end


def test_cli_error_is_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, str(CONVERTERS / 'coco_object.py'), str(tmp_path / 'missing')],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: COCO-Stuff164k root (SRC) not found: '{tmp_path / 'missing'}'; "
        'see data/README.md']


def test_cli_progress_line(tmp_path):
    make_coco_stuff(tmp_path)
    result = subprocess.run(
        [sys.executable, str(CONVERTERS / 'coco_stuff164k.py'), str(tmp_path)],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert 'coco_stuff164k val2017: 1/1 done' in result.stderr


def test_converted_ade847_and_context459_load_through_config(tmp_path):
    pytest.importorskip('mmseg')
    import fsa_seg.plugin  # noqa: F401  (registers the datasets)
    from mmengine import Config
    from mmseg.registry import DATASETS
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=True)

    root = tmp_path / 'ADE20K_2021_17_01'
    make_ade_full(root)
    converter('ade847').main([str(root)])
    src, mats = tmp_path / 'VOC2010', tmp_path / 'trainval'
    make_voc2010(src, mats)
    converter('pascal_context459').main([str(src), '--mat-dir', str(mats)])
    for name, data_root, row in (('ade847', root, [0, 1, 255, 846, 65535, 65535]),
                                 ('context459', src, [65535, 1, 2, 283, 457, 458])):
        cfg = Config.fromfile(str(REPO_ROOT / f'configs/_base_/datasets/{name}.py'))
        cfg.test_dataloader.dataset.data_root = str(data_root)
        dataset = DATASETS.build(cfg.test_dataloader.dataset)
        sample = dataset[len(dataset) - 1]
        assert sample['data_samples'].gt_sem_seg.data.numpy()[0, 0].tolist() == row, name


def test_converted_coco_object_loads_through_config(tmp_path):
    pytest.importorskip('mmseg')
    import fsa_seg.plugin  # noqa: F401  (registers COCOObjectDataset)
    from mmengine import Config
    from mmseg.registry import DATASETS
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=True)

    src, out = tmp_path / 'coco_stuff164k', tmp_path / 'coco_object'
    make_coco_stuff(src)
    converter('coco_object').main([str(src), '-o', str(out)])
    cfg = Config.fromfile(str(REPO_ROOT / 'configs/_base_/datasets/coco_object.py'))
    cfg.test_dataloader.dataset.data_root = str(out)
    sample = DATASETS.build(cfg.test_dataloader.dataset)[0]
    gt = sample['data_samples'].gt_sem_seg.data.numpy()[0, 0].tolist()
    assert gt == [1, 255, 12, 80, 255, 0, 0, 0]
