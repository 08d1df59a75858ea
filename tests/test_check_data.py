"""tools/check_data.py (fsa_seg.diagnostics.data_check) on a generated data/ tree."""
import json
import os
import os.path as osp
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fsa_seg.diagnostics import data_check as check_data
from fsa_seg.benchmarks import BENCHMARKS
from tooling import run_tool

REPO_ROOT = Path(__file__).resolve().parents[1]


def write_pair(root: Path, img: str, mask: str, values, size=(2, 4), mask_mode='L',
               img_size=None) -> None:
    h, w = size
    (root / img).parent.mkdir(parents=True, exist_ok=True)
    (root / mask).parent.mkdir(parents=True, exist_ok=True)
    fmt = 'PNG' if img.endswith('.png') else 'JPEG'
    img_h, img_w = img_size or size
    Image.new('RGB', (img_w, img_h), (1, 2, 3)).save(root / img, format=fmt)
    arr = np.resize(np.array(values, np.uint8), (h, w))
    if mask_mode == 'RGB':
        Image.fromarray(np.stack([arr] * 3, -1)).save(root / mask)
    else:
        label = Image.fromarray(arr, mode=mask_mode)
        if mask_mode == 'P':  # a full palette, so Pillow keeps the indices as written
            label.putpalette([c for k in range(256) for c in (k, k, 255 - k)])
        label.save(root / mask)


@pytest.fixture
def data_tree(tmp_path):
    """VOC ready (3 val images), ADE20K with problems, Cityscapes with a colour mask."""
    voc = tmp_path / 'VOCdevkit' / 'VOC2012'
    for k in range(3):
        write_pair(voc, f'JPEGImages/{k}.jpg', f'SegmentationClass/{k}.png', [0, 5, 20, 255],
                   mask_mode='P')
    write_pair(voc, 'JPEGImages/train_only.jpg', 'SegmentationClass/train_only.png', [1])
    (voc / 'ImageSets' / 'Segmentation').mkdir(parents=True)
    (voc / 'ImageSets' / 'Segmentation' / 'val.txt').write_text('0\n1\n2\n')

    ade = tmp_path / 'ade' / 'ADEChallengeData2016'
    write_pair(ade, 'images/validation/a.jpg', 'annotations/validation/a.png', [0, 150, 200])
    write_pair(ade, 'images/validation/b.jpg', 'annotations/validation/b.png', [1],
               img_size=(3, 4))
    write_pair(ade, 'images/validation/c.jpg', 'annotations/validation/unused.png', [1])

    city = tmp_path / 'cityscapes'
    write_pair(city, 'leftImg8bit/val/ulm/ulm_1_leftImg8bit.png',
               'gtFine/val/ulm/ulm_1_gtFine_labelTrainIds.png', [0, 18], mask_mode='RGB')
    return tmp_path


def run(args):
    done = run_tool("check_data", *args)
    return done.returncode, done.stdout


def test_report_on_generated_tree(data_tree, tmp_path):
    report_path = tmp_path / 'out' / 'report.json'
    code, out = run(['--data-root', str(data_tree), '--json', str(report_path)])
    assert code == 0
    reports = {r['name']: r for r in json.loads(report_path.read_text())}
    assert list(reports) == list(BENCHMARKS)

    voc = reports['voc21']
    assert (voc['status'], voc['images'], voc['masks'], voc['images_without_mask']) == (
        'ready', 3, 3, 0)
    assert voc['labels_seen'] == [0, 5, 20, 255] and voc['allowed'] == '0-20,255'
    assert voc['problems'] == [] and voc['notes'] == ['3 images; the full split has 1449']
    assert reports['voc20']['status'] == 'ready' and reports['voc20']['allowed'] == '0-20,255'

    ade = reports['ade20k']
    assert (ade['status'], ade['images'], ade['masks'], ade['images_without_mask']) == (
        'problems', 3, 2, 1)
    assert ade['labels_seen'] == [0, 1, 150, 200] and ade['allowed'] == '0-150,255'
    joined = ' | '.join(ade['problems'])
    assert '1 images have no mask (first: c.png)' in joined
    assert 'unexpected label values 200' in joined
    assert '1 masks differ in size' in joined

    city = reports['cityscapes']
    assert city['status'] == 'problems' and 'colour (RGB)' in city['problems'][0]

    for name in ('context60', 'context59', 'coco_object', 'coco_stuff164k', 'ade847', 'context459'):
        assert reports[name]['status'] == 'missing'
        assert 'data root missing' in reports[name]['problems'][0]

    assert 'voc21' in out and 'ade20k: problem: ' in out
    assert 'context60: missing: data root missing' in out
    assert f'2/{len(BENCHMARKS)} benchmarks ready' in out


def write_tif_pair(root: Path, img: str, mask: str, values) -> None:
    (root / img).parent.mkdir(parents=True, exist_ok=True)
    (root / mask).parent.mkdir(parents=True, exist_ok=True)
    Image.new('RGB', (len(values), 2), (1, 2, 3)).save(root / img, format='JPEG')
    Image.fromarray(np.array([values, values], np.uint16)).save(root / mask, format='TIFF')


def test_16bit_benchmarks(tmp_path):
    """ADE20K-847 and PASCAL-Context-459: 16-bit TIFF masks, classes above 255, 65535 = ignore."""
    ade = tmp_path / 'ADE20K_2021_17_01'
    write_tif_pair(ade, 'images_detectron2/validation/ADE_val_1.jpg',
                   'annotations_detectron2/validation/ADE_val_1.tif', [0, 255, 846, 65535])
    (ade / 'validation.txt').write_text('ADE_val_1\n')
    voc = tmp_path / 'VOCdevkit' / 'VOC2010'
    write_tif_pair(voc, 'JPEGImages/2008_000002.jpg', 'annotations_detectron2/pc459_val/2008_000002.tif',
                   [0, 458, 459, 65535])
    (voc / 'ImageSets' / 'SegmentationContext').mkdir(parents=True)
    (voc / 'ImageSets' / 'SegmentationContext' / 'val.txt').write_text('2008_000002\n')
    report_path = tmp_path / 'report.json'
    code, out = run(['--data-root', str(tmp_path), '--benchmarks', 'ade847', 'context459',
                     '--json', str(report_path)])
    reports = {r['name']: r for r in json.loads(report_path.read_text())}
    ade_report, pc_report = reports['ade847'], reports['context459']
    assert (ade_report['status'], ade_report['images'], ade_report['masks']) == ('ready', 1, 1)
    assert ade_report['labels_seen'] == [0, 255, 846, 65535] and ade_report['allowed'] == '0-846,65535'
    assert ade_report['notes'] == ['1 images; the full split has 2000']
    assert pc_report['status'] == 'problems' and pc_report['allowed'] == '0-458,65535'
    assert 'unexpected label values 459' in pc_report['problems'][0]
    assert code == 0 and '1/2 benchmarks ready' in out
    assert 'tools/dataset_converters/ade847.py' in BENCHMARKS['ade847'].converter


def test_strict_exit_code(data_tree):
    assert run(['--data-root', str(data_tree), '--strict'])[0] == 1
    code, out = run(['--data-root', str(data_tree), '--strict', '--benchmarks', 'voc21', 'voc20'])
    assert code == 0 and '2/2 benchmarks ready' in out


def test_max_masks_limits_reading(tmp_path):
    voc = tmp_path / 'VOCdevkit' / 'VOC2012'
    stems = [f'{k:02d}' for k in range(10)]
    for k, stem in enumerate(stems):
        write_pair(voc, f'JPEGImages/{stem}.jpg', f'SegmentationClass/{stem}.png', [k])
    (voc / 'ImageSets' / 'Segmentation').mkdir(parents=True)
    (voc / 'ImageSets' / 'Segmentation' / 'val.txt').write_text('\n'.join(stems))
    spec = BENCHMARKS['voc21']
    few = check_data.check_benchmark(spec, str(voc), max_masks=2)
    assert few.masks_checked == 2 and few.labels_seen == [0, 5]
    every = check_data.check_benchmark(spec, str(voc), max_masks=0)
    assert every.masks_checked == 10 and every.labels_seen == list(range(10))


def test_split_file_missing_and_listed_image_missing(tmp_path):
    voc = tmp_path / 'VOC2012'
    write_pair(voc, 'JPEGImages/a.jpg', 'SegmentationClass/a.png', [1])
    spec = BENCHMARKS['voc21']
    report = check_data.check_benchmark(spec, str(voc))
    assert report.status == 'missing' and 'split file missing' in report.problems[0]
    (voc / 'ImageSets' / 'Segmentation').mkdir(parents=True)
    (voc / 'ImageSets' / 'Segmentation' / 'val.txt').write_text('a\nb\n')
    report = check_data.check_benchmark(spec, str(voc))
    assert report.status == 'problems' and report.images == 1
    assert '1 images listed in ImageSets/Segmentation/val.txt are missing (first: b.jpg)' in (
        report.problems[0])


def test_from_configs_uses_config_roots(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # config roots are relative: data/...
    roots = check_data.resolve_roots(['cityscapes'], None, from_configs=True)
    assert roots == {'cityscapes': 'data/cityscapes'}
    report = check_data.check_benchmark(BENCHMARKS['cityscapes'], roots['cityscapes'])
    assert report.status == 'missing' and 'data/cityscapes' in check_data.format_table([report])


def test_compact():
    assert check_data.compact([255, 0, 1, 2, 5, 7, 8]) == '0-2,5,7-8,255'
    assert check_data.compact([]) == ''


def test_default_root_is_data_of_the_current_directory(data_tree, tmp_path_factory, monkeypatch):
    """As tools/test.py reads the configs' relative data roots: data/ of where it runs, not of the package."""
    cwd = tmp_path_factory.mktemp('elsewhere')
    (cwd / 'data').symlink_to(data_tree, target_is_directory=True)
    monkeypatch.chdir(cwd)
    roots = check_data.resolve_roots(['voc21'], None, from_configs=False)
    assert roots == {'voc21': osp.join('data', 'VOCdevkit', 'VOC2012')}
    assert check_data.check_benchmark(BENCHMARKS['voc21'], roots['voc21']).status == 'ready'
    done = subprocess.run([sys.executable, str(REPO_ROOT / 'tools' / 'check_data.py'), '--benchmarks', 'voc21',
                           '--strict'], cwd=cwd, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
    assert done.returncode == 0, done.stdout + done.stderr
    assert '1/1 benchmarks ready' in done.stdout
