"""The released evaluation protocols, as data: each method's settings per benchmark and the CLIP backbones of
the paper, which ``tools/gen_configs.py`` (:mod:`fsa_seg.zoo.generate`) writes into the configs.

A protocol base ``configs/_base_/protocols/{protocol}_{benchmark}.py`` holds one method's released settings on
one benchmark: ``protocol`` (the model keys: class names, background threshold, window, logit scale, PAMR) and
``protocol_short_side`` (the test resize). A base method names its protocol in its registry entry
(:class:`fsa_seg.last_block.LastBlockMethod`: ``protocol``, ``fsa_protocol``); a new method may register its
own (:func:`register_protocol`) or carry a :class:`Protocol` there directly.

* ``fsa``: the released FSA configs (FSA-ProxyCLIP; also vanilla CLIP and MaskCLIP, which publish none);
* ``proxyclip`` (ProxyCLIP without FSA), ``sclip``, ``clearclip``, ``naclip`` (with and without FSA): each
  method's released configs, segmentor defaults and class-name files (where theirs differ from FSA's);
* ``sam3``: SAM3's input resolution (short side 1008), our SAM3 class files (the benchmark's own where none
  exists), instance threshold / top-k and a per-benchmark background threshold (untuned).

FSA's lamda follows the released ``hyper_param.txt``: 3.0 for ViT-B/16 and ViT-L/14, 2.3 for ViT-H/14 (the
backbones' ``lamda``), 4.5 for every backbone with the MAE proxy (the proxy's registry entry,
:class:`fsa_seg.vfm.ProxySpec`).

Pure Python: importing this module needs neither torch nor mmseg.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Tuple, Union

from ..benchmarks import Benchmark
from ..class_names import CLASS_NAME_DIR


@dataclass(frozen=True)
class Backbone:
    """A CLIP backbone of the paper: its config-name tag, open_clip model and pretrained tag, title and FSA's
    lamda for it."""

    tag: str
    clip_model: str
    clip_pretrained: str
    title: str
    lamda: float


BACKBONES: Dict[str, Backbone] = {b.tag: b for b in (
    Backbone("vit-b16", "ViT-B-16", "openai", "OpenAI ViT-B/16", 3.0),
    Backbone("vit-l14", "ViT-L-14", "openai", "OpenAI ViT-L/14", 3.0),
    Backbone("vit-h14", "ViT-H-14", "laion2b_s32b_b79k", "OpenCLIP ViT-H/14 (LAION-2B)", 2.3),
)}
SAM3_SHORT_SIDE = 1008


@dataclass(frozen=True)
class Protocol:
    """A method's released evaluation settings: model keys for every benchmark, per-benchmark overrides, the
    test short side per benchmark (default: the dataset base's) and notes.

    ``class_names_prefix``: use the class-name file ``<prefix><benchmark's file>`` where one exists (SAM3's).
    ``background_thd``: the background threshold (``prob_thd``) per benchmark with a background class, required
    for each of them; benchmarks without background get 0.0. None: ``prob_thd`` comes from ``common`` and
    ``per_dataset``.
    """

    name: str
    title: str
    source: str
    common: Mapping[str, object]
    per_dataset: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    short_side: Mapping[str, int] = field(default_factory=dict)
    default_short_side: Optional[int] = None
    notes: Mapping[str, Tuple[str, ...]] = field(default_factory=dict)
    class_names_prefix: Optional[str] = None
    background_thd: Optional[Mapping[str, float]] = None

    def class_names(self, bench: Benchmark) -> str:
        """The class-name file this protocol uses on ``bench``."""
        if self.class_names_prefix:
            own = f"{self.class_names_prefix}{bench.class_names}"
            if (CLASS_NAME_DIR / f"{own}.txt").is_file():
                return own
        return bench.class_names

    def model(self, bench: Benchmark) -> Dict[str, object]:
        """The model keys of the protocol base on ``bench`` (the benchmark's own ``protocol_keys`` for this
        protocol last)."""
        own = bench.protocol_keys.get(self.name, {})
        keys: Dict[str, object] = {"name_path": bench.class_names}
        keys.update(self.common)
        keys.update(self.per_dataset.get(bench.name, {}))
        if self.class_names_prefix:
            keys["name_path"] = self.class_names(bench)
        if self.background_thd is not None:
            if bench.background and bench.name not in self.background_thd and "prob_thd" not in own:
                raise ValueError(f"benchmark '{bench.name}' has a background class: give protocol '{self.name}' "
                                 f"a background threshold for it (the benchmark's protocol_keys: "
                                 f"{{'{self.name}': {{'prob_thd': ...}}}})")
            keys["prob_thd"] = self.background_thd.get(bench.name, 0.0) if bench.background else 0.0
        keys.update(own)
        return keys

    def side(self, bench: Benchmark) -> int:
        """The test resize's short side on ``bench``."""
        return self.short_side.get(bench.name, self.default_short_side or bench.short_side)

    def bench_notes(self, bench: Benchmark) -> Tuple[str, ...]:
        notes = tuple(self.notes.get(bench.name, ()))
        if self.class_names_prefix and self.class_names(bench) == bench.class_names:
            notes += (f"no {self.title} class file for this benchmark: its own class names "
                      f"('{bench.class_names}') are used.",)
        return notes


PROTOCOLS: Dict[str, Protocol] = {}


def register_protocol(protocol: Protocol) -> Protocol:
    """Add a protocol (a new method's released settings) under its name."""
    if not protocol.name or protocol.name in PROTOCOLS:
        raise ValueError(f"protocol needs a new unique name, got '{protocol.name}'")
    PROTOCOLS[protocol.name] = protocol
    return protocol


def get_protocol(protocol: Union[str, Protocol, None]) -> Protocol:
    """A protocol by name, or the given :class:`Protocol`; None: FSA's."""
    if isinstance(protocol, Protocol):
        return protocol
    name = protocol or "fsa"
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ValueError(f"unknown protocol '{name}'; choose one of {list(PROTOCOLS)}") from None


# ADE20K-847 and PASCAL-Context-459: FSA and ProxyCLIP release configs for them (cfg_ade847.py,
# cfg_context459.py); SCLIP, ClearCLIP and NACLIP do not, so their protocols there are their settings on the
# nearest benchmark they release, without background (the generated values are those of ADE20K / Context59).
UNRELEASED = {
    "ade847": ("the method releases no ADE20K-847 config: its ADE20K settings are used.",),
    "context459": ("the method releases no PASCAL-Context-459 config: its Context59 settings are used.",),
}
# SAM3's background threshold (prob_thd) on each benchmark with a background class; untuned, one entry per
# benchmark so each can be set on its own. Benchmarks without background use 0.0 (every pixel gets a class).
SAM3_BACKGROUND_THD = {"voc21": 0.5, "context60": 0.5, "coco_object": 0.5}

for _protocol in (
    Protocol(
        "fsa", "FSA", "FSA (Chi et al., ICCV 2025), github.com/chi-chi-zx/FSA: its evaluation configs cfg_*.py and "
                      "FSAProxySegmentation's defaults (336/112 window, logit scale 40)",
        dict(slide_crop=336, slide_stride=112, logit_scale=40.0, prob_thd=0.0),
        {"voc21": dict(prob_thd=0.2), "context60": dict(prob_thd=0.14), "coco_object": dict(prob_thd=0.3),
         "cityscapes": dict(slide_crop=224, slide_stride=80)}),
    Protocol(
        "proxyclip", "ProxyCLIP",
        "ProxyCLIP (Lan et al., ECCV 2024), github.com/mc-lan/ProxyCLIP: configs/cfg_*.py and "
        "ProxyCLIPSegmentation's defaults (336/112 window, logit scale 40)",
        dict(slide_crop=336, slide_stride=112, logit_scale=40.0, prob_thd=0.0),
        {"voc21": dict(prob_thd=0.2), "context60": dict(prob_thd=0.15), "coco_object": dict(prob_thd=0.25),
         "cityscapes": dict(slide_crop=224, slide_stride=112)}),
    Protocol(
        "sclip", "SCLIP", "SCLIP (Wang et al., ECCV 2024), github.com/wangf3014/SCLIP: configs/cfg_*.py, its "
                          "class-name files configs/cls_*.txt and CLIPForSegmentation's defaults (224/112 window, "
                          "logit scale 40, no PAMR)",
        dict(slide_crop=224, slide_stride=112, logit_scale=40.0, prob_thd=0.0),
        {"voc21": dict(logit_scale=65.0, prob_thd=0.1, area_thd=0.1, name_path="sclip_voc21"),
         "voc20": dict(name_path="sclip_voc20"),
         "context60": dict(logit_scale=50.0, prob_thd=0.1),
         "coco_object": dict(logit_scale=50.0, prob_thd=0.1, name_path="sclip_coco_object")},
        {"coco_stuff164k": 448, "cityscapes": 560}, default_short_side=336,
        notes=UNRELEASED),
    Protocol(
        "clearclip", "ClearCLIP",
        "ClearCLIP (Lan et al., ECCV 2024), github.com/mc-lan/ClearCLIP: configs/cfg_*.py, its class-name files "
        "configs/cls_*.txt and ClearCLIPSegmentation's defaults (448/224 window, logit scale 50, short side 448)",
        dict(slide_crop=448, slide_stride=224, logit_scale=50.0, prob_thd=0.0),
        {"voc21": dict(prob_thd=0.5, name_path="clearclip_voc21"), "context60": dict(prob_thd=0.15),
         "coco_object": dict(prob_thd=0.4, name_path="clearclip_coco_object"), "cityscapes": dict(slide_crop=224)},
        default_short_side=448, notes=UNRELEASED),
    Protocol(
        "naclip", "NACLIP",
        "NACLIP (Hajimiri et al., WACV 2025), github.com/sinahmr/NACLIP: configs/cfg_*.py, its class-name files "
        "configs/cls_*.txt, NACLIP's defaults (224/112 window, logit scale 40, Gaussian std 5), the main-results "
        "run (test_all.sh reduced naclip 5 on: PAMR 10 steps, dilations 8 and 16), windows not padded to the "
        "patch grid (the patch embedding floors, the logits are stretched back) and the stored probabilities "
        "renormalised after the max over synonyms",
        dict(slide_crop=224, slide_stride=112, logit_scale=40.0, prob_thd=0.0, pamr=True, pamr_steps=10,
             pamr_dilations=(8, 16), patch_fit="floor", renormalize=True),
        {"voc21": dict(prob_thd=0.1, slide_crop=0, name_path="naclip_voc21"),
         "voc20": dict(slide_crop=0, name_path="naclip_voc20"),
         "context60": dict(prob_thd=0.1), "coco_object": dict(prob_thd=0.1, name_path="naclip_coco_object")},
        {"cityscapes": 560}, default_short_side=336, notes=UNRELEASED),
    Protocol(
        "sam3", "SAM3",
        "SAM3 (Meta, 2025): its 1008 x 1008 input; SegEarth-OV-3's score recipe with SAM3's confidence threshold "
        "0.5 (Sam3Processor) as the instance threshold and no top-k; our SAM3 class files "
        "(fsa_seg/resources/class_names/sam3_*.txt); where the benchmark has background, a single 'background' "
        "prompt and a background threshold of 0.5 (the binarisation threshold of transformers' "
        "Sam3ImageProcessor.post_process_semantic_segmentation). Every threshold is untuned: no SAM3 weights were "
        "available to tune them",
        dict(slide_crop=0, instance_thd=0.5, top_k=0),
        default_short_side=SAM3_SHORT_SIDE, class_names_prefix="sam3_", background_thd=SAM3_BACKGROUND_THD),
):
    register_protocol(_protocol)
del _protocol
