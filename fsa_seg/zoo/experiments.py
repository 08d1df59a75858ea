"""Which config evaluates a (method, FSA, backbone, proxy, benchmark), and how a config is moved to another
benchmark (for the sweep and the paper table, :mod:`fsa_seg.apis`).

Config naming (:mod:`fsa_seg.zoo.generate`; backbone tags ``vit-b16`` | ``vit-l14`` | ``vit-h14``):

* ``configs/fsa_proxy_{vfm}_{dataset}.py`` - FSA-ProxyCLIP with OpenAI ViT-B/16 (the paper's main table);
* ``configs/proxyclip/{fsa_}proxy_{vfm}_{backbone}_{dataset}.py`` - every other ProxyCLIP config;
* ``configs/{method}/{fsa_}{method}_{backbone}_{dataset}.py`` - the methods without a proxy (CLIP-native);
* ``configs/{method}/{fsa_}{method}_{vfm}_{backbone}_{dataset}.py`` - any other method with a proxy.

Titles in the tables come from the registry entries: the base method's ``short_title`` or ``title``
(:class:`fsa_seg.last_block.LastBlockMethod`), the proxy's ``title`` (:class:`fsa_seg.vfm.ProxySpec`).

When no file matches, the benchmark's default config (FSA-ProxyCLIP's, ``configs/fsa_proxy_sam_{dataset}.py``)
is used with ``--cfg-options`` setting the method keys (``model.base_method``, ``model.fsa``,
``model.clip_model``, ``model.vfm``): it runs, but with the FSA protocol rather than the method's own.
"""
from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..benchmarks import BENCHMARKS, benchmark_for_dataset_type, get_benchmark
from ..resources import CONFIG_DIR



def needs_proxy(method: str) -> bool:
    """Whether base method ``method`` runs on a proxy model (its registry entry; False when unknown)."""
    from ..last_block import LAST_BLOCKS

    cls = LAST_BLOCKS.get(method)
    return bool(cls is not None and cls.needs_proxy)


def parse_data_roots(items: Optional[Sequence[str]]) -> Dict[str, str]:
    """``['voc21=/data/voc', ...]`` -> ``{'voc21': '/data/voc'}`` (``--data-root`` of the tools)."""
    roots: Dict[str, str] = {}
    for item in items or []:
        name, sep, path = str(item).partition("=")
        if not sep or not path:
            raise ValueError(f"--data-root {item}: expected DATASET=PATH, e.g. voc21=data/VOCdevkit/VOC2012")
        roots[get_benchmark(name).name] = path
    return roots


def backbone_tag(backbone: str) -> str:
    """``'ViT-B-16'`` -> ``'vit-b16'`` (the config file naming); tags are returned as they are."""
    text = backbone.lower().replace("/", "-")
    return re.sub(r"^vit-([a-z])-(\d+)$", r"vit-\1\2", text)


def config_candidates(method: str, fsa: bool, backbone: str, vfm: Optional[str], dataset: str) -> List[Path]:
    tag, prefix = backbone_tag(backbone), "fsa_" if fsa else ""
    if method == "proxyclip":
        out = []
        if fsa and tag == "vit-b16":
            out.append(CONFIG_DIR / f"fsa_proxy_{vfm}_{dataset}.py")
        out.append(CONFIG_DIR / "proxyclip" / f"{prefix}proxy_{vfm}_{tag}_{dataset}.py")
        return out
    if vfm and needs_proxy(method):
        return [CONFIG_DIR / method / f"{prefix}{method}_{vfm}_{tag}_{dataset}.py"]
    return [CONFIG_DIR / method / f"{prefix}{method}_{tag}_{dataset}.py"]


def find_config(method: str, fsa: bool, backbone: str, vfm: Optional[str], dataset: str
                ) -> Tuple[str, Dict[str, Any], str]:
    """``(config path, cfg options, how)`` for one table cell; ``how`` is ``'config'`` or ``'fallback'``."""
    for path in config_candidates(method, fsa, backbone, vfm, dataset):
        if path.is_file():
            return str(path), {}, "config"
    options: Dict[str, Any] = {"model.base_method": method, "model.fsa": bool(fsa), "model.clip_model": backbone,
                               "model.vfm": vfm if needs_proxy(method) else None}
    return default_config(dataset), options, "fallback"


# -- moving a config to another benchmark ---------------------------------------------------------------
def dataset_of_config(cfg) -> Optional[str]:
    """The benchmark a loaded config evaluates (from its test dataset type)."""
    spec = benchmark_for_dataset_type(cfg.test_dataloader.dataset.get("type"))
    return spec.name if spec is not None else None


def default_config(dataset: str) -> str:
    """The benchmark's default config: FSA-ProxyCLIP (SAM proxy, ViT-B/16) with the released FSA protocol."""
    return str(CONFIG_DIR / f"fsa_proxy_sam_{get_benchmark(dataset).name}.py")


@lru_cache(maxsize=None)
def dataset_model_keys() -> Tuple[str, ...]:
    """Model keys that belong to the benchmark: those the protocol bases of the default configs set
    (``configs/_base_/protocols/fsa_*.py``: name_path, prob_thd, window, logit scale)."""
    from mmengine.config import Config

    keys = set()
    for name in BENCHMARKS:
        keys |= set(Config.fromfile(str(CONFIG_DIR / "_base_" / "protocols" / f"fsa_{name}.py")).protocol)
    return tuple(sorted(keys))


def sibling_config(config: str, source: str, target: str) -> Optional[str]:
    """``fsa_proxy_sam_voc21.py`` -> ``fsa_proxy_sam_context60.py`` (same folder), if that file exists."""
    path = Path(config)
    stem = path.stem
    for alias in sorted(get_benchmark(source).names, key=len, reverse=True):
        if stem.endswith("_" + alias):
            for new in get_benchmark(target).names:
                candidate = path.with_name(stem[: -len(alias)] + new + path.suffix)
                if candidate.is_file():
                    return str(candidate)
            return None
    return None


def config_for_dataset(config: str, dataset: str, cfg=None) -> Tuple[str, Dict[str, Any], str]:
    """Move ``config`` to benchmark ``dataset``: ``(config path, cfg options, how)``.

    1. ``config`` itself when it already evaluates ``dataset`` (how = ``'same'``);
    2. the sibling file whose name differs only in the dataset part (``fsa_proxy_sam_voc21.py`` ->
       ``fsa_proxy_sam_context60.py``; how = ``'sibling'``);
    3. otherwise the benchmark's :func:`default_config` with ``--cfg-options`` for every model key of
       ``config`` that is not a benchmark key (see :func:`dataset_model_keys`) and differs from the default
       config (how = ``'default config'``). Only model keys are carried over: other settings of ``config``
       (hooks, loader) must be given again with ``--cfg-options``.
    """
    from mmengine.config import Config

    cfg = cfg if cfg is not None else Config.fromfile(config)
    source = dataset_of_config(cfg)
    if source == dataset:
        return config, {}, "same"
    if source is not None:
        sibling = sibling_config(config, source, dataset)
        if sibling is not None:
            return sibling, {}, "sibling"
    base_path = default_config(dataset)
    base = Config.fromfile(base_path).model
    skip = set(dataset_model_keys())
    options = {f"model.{k}": (v.to_dict() if hasattr(v, "to_dict") else v) for k, v in cfg.model.items()
               if k not in skip and base.get(k, object()) != v}
    return base_path, options, "default config"


def method_title(method: str, vfm: Optional[str] = None) -> str:
    """``'ProxyCLIP (DINOv2)'``, ``'SCLIP'``: the title of a method (and its proxy) in the tables."""
    from ..last_block import LAST_BLOCKS
    from ..vfm import VFM_REGISTRY

    cls = LAST_BLOCKS.get(method)
    title = (cls.short_title or cls.title or method) if cls is not None else method
    if vfm and cls is not None and cls.needs_proxy:
        spec = VFM_REGISTRY.get(vfm)
        title += f" ({spec.label if spec is not None else vfm})"
    return title
