"""The benchmarks: one registry that datasets, configs, check_data, the experiment tools and the published
numbers all read.

An entry says what a benchmark is (titles, the names config files may use for it), where its validation
split lives and how its masks are encoded, its class-name file, the test resize of the released FSA
protocol, whether class 0 is a background class and its converter; its dataset base config
(``configs/_base_/datasets/<name>.py``) is generated from the entry by ``tools/gen_configs.py``. Adding a
benchmark is one :class:`Benchmark` entry (:func:`register_benchmark`) and one class-name file (docs/extending.md).

The eight benchmarks of FSA (ICCV 2025) and its bases, in the column order of the paper's tables:
VOC21, Context60, COCO-Object, VOC20, Context59, COCO-Stuff, Cityscapes, ADE20K. Then two more that the
recent literature and SAM3 report (``paper_table=False``): ADE20K-847 (ADE20K-full) and PASCAL-Context-459,
prepared as CAT-Seg does (github.com/KU-CVLAB/CAT-Seg ``datasets/``: 16-bit TIFF masks, 65535 = unlabeled),
the layout the released FSA and ProxyCLIP configs (``cfg_ade847.py``, ``cfg_context459.py``) read.

Pure Python: importing this module needs neither torch nor mmseg.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from .resources import CONFIG_DIR, config_path


@dataclass(frozen=True)
class Benchmark:
    """One evaluation benchmark (a validation split with its label convention).

    Paths are relative to ``data_root``; ``data_root`` is relative to the working directory (the
    repository root for ``tools/*.py``), as in the configs.
    """

    name: str                   # registry key and config-name part, e.g. 'coco_stuff164k'
    title: str                  # long title, e.g. 'COCO-Stuff164k (171 classes)'
    column: str                 # table column title, e.g. 'COCO-Stuff'
    aliases: Tuple[str, ...]    # other names config files may use for it (sibling lookup)
    dataset_type: str           # mmseg dataset class of its dataset base config
    class_names: str            # builtin class-name file (fsa_seg/resources/class_names/<class_names>.txt)
    data_root: str
    img_dir: str
    mask_dir: str
    img_suffix: str
    mask_suffix: str
    ann_file: Optional[str]     # split file (None: every image of img_dir)
    num_classes: int
    background: bool            # class 0 is a background class (line 1 of the class file: its synonyms)
    reduce_zero_label: bool     # mask value 0 is ignored and the others shift down by one
    expected_images: int
    short_side: int             # test resize short side of the released FSA protocol (long side <= 2048)
    converter: str              # command line that prepares it from its public download
    paper_table: bool = True    # one of the eight benchmarks of the paper's tables
    ignore_index: int = 255     # mask value that is not evaluated (65535 for the 16-bit masks of 459/847 classes)
    # Its dataset base config, generated from this entry (tools/gen_configs.py): the header comment (lines
    # separated by newlines), notes after the standard lines, extra keys of the test dataset (e.g. the
    # metainfo or file suffixes of a generic dataset class) and of its annotation-loading step.
    description: str = ""
    config_notes: str = ""
    dataset_keys: Tuple[Tuple[str, Any], ...] = field(default=(), hash=False)
    load_keys: Tuple[Tuple[str, Any], ...] = field(default=(), hash=False)
    # Model keys of a protocol on this benchmark, by protocol name, over the protocol's own (a benchmark the
    # released protocols do not know sets e.g. SAM3's background threshold here: {'sam3': {'prob_thd': 0.5}}).
    protocol_keys: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, hash=False)

    @property
    def config(self) -> str:
        """Path of its dataset base config, as ``configs/...`` (see :func:`fsa_seg.resources.config_path`)."""
        return f"configs/_base_/datasets/{self.name}.py"

    @property
    def names(self) -> Tuple[str, ...]:
        """Its name and aliases."""
        return (self.name,) + tuple(a for a in self.aliases if a != self.name)

    @property
    def max_raw_label(self) -> int:
        """Largest class value a raw mask file may hold (``ignore_index`` is always allowed).

        With ``reduce_zero_label`` the file stores classes as 1..N and 0 (ignored).
        """
        return self.num_classes if self.reduce_zero_label else self.num_classes - 1


BENCHMARKS: Dict[str, Benchmark] = {}


def register_benchmark(benchmark: Benchmark, replace: bool = False) -> Benchmark:
    """Add a benchmark to the registry (``replace=True`` to redefine one)."""
    taken = {alias: b.name for b in BENCHMARKS.values() for alias in b.names if b.name != benchmark.name}
    clash = [a for a in benchmark.names if a in taken]
    if clash:
        raise ValueError(f"benchmark '{benchmark.name}': name(s) {clash} already used by "
                         f"{sorted({taken[a] for a in clash})}")
    if benchmark.name in BENCHMARKS and not replace:
        raise ValueError(f"benchmark '{benchmark.name}' is already registered")
    BENCHMARKS[benchmark.name] = benchmark
    return benchmark


def list_benchmarks(paper_table_only: bool = False) -> Tuple[str, ...]:
    """Registered benchmark names, in registry (paper column) order."""
    return tuple(n for n, b in BENCHMARKS.items() if b.paper_table or not paper_table_only)


def paper_benchmarks() -> Tuple[str, ...]:
    """The eight benchmarks of the paper's tables, in its column order."""
    return list_benchmarks(paper_table_only=True)


def get_benchmark(name: str) -> Benchmark:
    """The benchmark called ``name`` (or one of its aliases); ``ValueError`` (one line) lists the names."""
    for bench in BENCHMARKS.values():
        if name in bench.names:
            return bench
    raise ValueError(f"unknown dataset '{name}'; choose from {', '.join(BENCHMARKS)}")


def check_benchmarks(names: Iterable[str]) -> List[str]:
    """Split comma-separated names, resolve aliases and drop repeats; ``ValueError`` names the valid ones."""
    out: List[str] = []
    for item in names:
        for name in str(item).split(","):
            name = name.strip()
            if name and get_benchmark(name).name not in out:
                out.append(get_benchmark(name).name)
    return out


def benchmark_for_dataset_type(dataset_type: Any) -> Optional[Benchmark]:
    """The benchmark whose dataset base config uses ``dataset_type`` (a registry name or a class)."""
    type_name = dataset_type if isinstance(dataset_type, str) else getattr(dataset_type, "__name__", "")
    type_name = type_name.split(".")[-1]
    for bench in BENCHMARKS.values():
        if bench.dataset_type == type_name:
            return bench
    return None


def dataset_base_config(name: str) -> str:
    """Absolute path of a benchmark's dataset base config."""
    return str(config_path(get_benchmark(name).config))


_VOC12 = dict(data_root="data/VOCdevkit/VOC2012", img_dir="JPEGImages", mask_dir="SegmentationClass",
              img_suffix=".jpg", mask_suffix=".png", ann_file="ImageSets/Segmentation/val.txt",
              expected_images=1449, short_side=336, converter="tools/dataset_converters/voc.py")
_CONTEXT = dict(data_root="data/VOCdevkit/VOC2010", img_dir="JPEGImages", mask_dir="SegmentationClassContext",
                img_suffix=".jpg", mask_suffix=".png", ann_file="ImageSets/SegmentationContext/val.txt",
                expected_images=5105, short_side=336, converter="tools/dataset_converters/pascal_context.py")
_COCO = dict(img_dir="images/val2017", mask_dir="annotations/val2017", img_suffix=".jpg", ann_file=None,
             expected_images=5000, short_side=336)

_RELEASED_16BIT = (
    "The released FSA/ProxyCLIP {config} (short side 448, no background threshold, the\n336/112 window), except "
    "the evaluator's ignore_index: the released configs keep IoUMetric's default 255,\nwhich ignores the pixels "
    "of class 255 ('{class_255}' here) and counts predictions on unlabeled pixels; pass\n--cfg-options "
    "test_evaluator.ignore_index=255 to reproduce that.")

for _bench in (
    Benchmark(name="voc21", title="PASCAL VOC 2012 (21 classes)", column="VOC21", aliases=("voc",),
              dataset_type="PascalVOCDataset", class_names="voc21", num_classes=21, background=True,
              reduce_zero_label=False, **_VOC12,
              description=('PASCAL VOC 2012 val (1449 images), 21 classes incl. background (line 1 of the\n'
                           'class-name file holds the background synonyms).')),
    Benchmark(name="context60", title="PASCAL-Context (60 classes)", column="Context60", aliases=("context",),
              dataset_type="PascalContextDataset", class_names="context60", num_classes=60, background=True,
              reduce_zero_label=False, **_CONTEXT,
              description=('PASCAL-Context val (5105 images), 59 classes + background (mask value 0).\n'
                           "mmseg's PascalContextDataset matches the released PascalContext60Dataset.")),
    Benchmark(name="coco_object", title="COCO-Object (81 classes)", column="COCO-Object", aliases=("object",),
              dataset_type="COCOObjectDataset", class_names="coco_object", data_root="data/coco_object",
              mask_suffix="_instanceTrainIds.png", num_classes=81, background=True, reduce_zero_label=False,
              dataset_keys=(("reduce_zero_label", False),),
              converter="tools/dataset_converters/coco_object.py", **_COCO,
              description=('COCO-Object val2017 (5000 images): background + 80 things, masks from\n'
                           'tools/dataset_converters/coco_object.py (<id>_instanceTrainIds.png).')),
    Benchmark(name="voc20", title="PASCAL VOC 2012 (20 classes, no background)", column="VOC20", aliases=(),
              dataset_type="PascalVOC20Dataset", class_names="voc20", num_classes=20, background=False,
              reduce_zero_label=True, **_VOC12,
              description=('PASCAL VOC 2012 val (1449 images), 20 object classes: background pixels are ignored\n'
                           '(PascalVOC20Dataset sets reduce_zero_label=True).')),
    Benchmark(name="context59", title="PASCAL-Context (59 classes, no background)", column="Context59",
              aliases=(), dataset_type="PascalContextDataset59", class_names="context59", num_classes=59,
              background=False, reduce_zero_label=True, load_keys=(("reduce_zero_label", True),), **_CONTEXT,
              description=('PASCAL-Context val (5105 images), 59 classes; background (mask value 0) is ignored.\n'
                           "mmseg's PascalContextDataset59 matches the released PascalContext59Dataset.")),
    Benchmark(name="coco_stuff164k", title="COCO-Stuff164k (171 classes)", column="COCO-Stuff",
              aliases=("coco_stuff", "stuff"), dataset_type="COCOStuffDataset", class_names="coco_stuff",
              data_root="data/coco_stuff164k", mask_suffix="_labelTrainIds.png", num_classes=171,
              background=False, reduce_zero_label=False,
              converter="tools/dataset_converters/coco_stuff164k.py", **_COCO,
              description=('COCO-Stuff164k val2017 (5000 images), 171 classes, masks from\n'
                           'tools/dataset_converters/coco_stuff164k.py (<id>_labelTrainIds.png).')),
    Benchmark(name="cityscapes", title="Cityscapes (19 classes)", column="Cityscapes", aliases=("city_scapes",),
              dataset_type="CityscapesDataset", class_names="cityscapes", data_root="data/cityscapes",
              img_dir="leftImg8bit/val", mask_dir="gtFine/val", img_suffix="_leftImg8bit.png",
              mask_suffix="_gtFine_labelTrainIds.png", ann_file=None, num_classes=19, background=False,
              reduce_zero_label=False, expected_images=500, short_side=448,
              converter="tools/dataset_converters/cityscapes.py",
              description=('Cityscapes val (500 images), 19 classes, masks from\n'
                           'tools/dataset_converters/cityscapes.py (*_gtFine_labelTrainIds.png).')),
    Benchmark(name="ade20k", title="ADE20K (150 classes)", column="ADE20K", aliases=("ade",),
              dataset_type="ADE20KDataset", class_names="ade20k", data_root="data/ade/ADEChallengeData2016",
              img_dir="images/validation", mask_dir="annotations/validation", img_suffix=".jpg",
              mask_suffix=".png", ann_file=None, num_classes=150, background=False, reduce_zero_label=True,
              load_keys=(("reduce_zero_label", True),),
              expected_images=2000, short_side=448, converter="tools/dataset_converters/ade20k.py",
              description=('ADE20K (ADEChallengeData2016) validation (2000 images), 150 classes; mask value 0\n'
                           '("other") is ignored.')),
    # Not in the paper's tables. Short side 448, as the released FSA/ProxyCLIP cfg_ade847.py/cfg_context459.py.
    Benchmark(name="ade847", title="ADE20K-847 (ADE20K-full, 847 classes)", column="ADE-847",
              aliases=("ade20k_full", "ade_full"), dataset_type="ADE20K847Dataset", class_names="ade847",
              data_root="data/ADE20K_2021_17_01", img_dir="images_detectron2/validation",
              mask_dir="annotations_detectron2/validation", img_suffix=".jpg", mask_suffix=".tif",
              ann_file="validation.txt", num_classes=847, background=False, reduce_zero_label=False,
              expected_images=2000, short_side=448, converter="tools/dataset_converters/ade847.py",
              paper_table=False, ignore_index=65535,
              description=("ADE20K-847 (ADE20K-full, ADE20K_2021_17_01) validation (2000 images), 847 classes; "
                           "16-bit masks,\n65535 = unlabeled (ignored). Prepared as CAT-Seg does: "
                           "tools/dataset_converters/ade847.py."),
              config_notes=_RELEASED_16BIT.format(config="cfg_ade847.py", class_255="pier")),
    Benchmark(name="context459", title="PASCAL-Context (459 classes)", column="Context459", aliases=("pc459",),
              dataset_type="PascalContext459Dataset", class_names="context459", data_root="data/VOCdevkit/VOC2010",
              img_dir="JPEGImages", mask_dir="annotations_detectron2/pc459_val", img_suffix=".jpg",
              mask_suffix=".tif", ann_file="ImageSets/SegmentationContext/val.txt", num_classes=459,
              background=False, reduce_zero_label=False, expected_images=5105, short_side=448,
              converter="tools/dataset_converters/pascal_context459.py", paper_table=False, ignore_index=65535,
              description=("PASCAL-Context val (5105 images) with the full 459 labels; 16-bit masks, 65535 = "
                           "unlabeled (ignored).\nPrepared as CAT-Seg does: "
                           "tools/dataset_converters/pascal_context459.py."),
              config_notes=_RELEASED_16BIT.format(config="cfg_context459.py", class_255="monkey")),
):
    register_benchmark(_bench)
del _bench
