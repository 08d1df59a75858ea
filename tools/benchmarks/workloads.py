"""What tools/benchmark.py times: each part is set up once, then called repeatedly.

Every model is built from a config with random weights at the real shapes. Text embeddings are random
unit vectors (one per query): with random weights the 80-template prompt ensemble would be just as
meaningless and takes minutes on a CPU; it is computed once per dataset anyway, never per image.

Parts (``N`` proxy tokens, ``C`` queries):

* ``whole``      per-crop forward, ``FSASegmentor.crop_scores`` on one crop: CLIP up to the last block,
                 the VFM proxy, the last block with FSA, upsampling. ``N`` is set by the VFM.
* ``whole_base`` the same without FSA.
* ``base``       the last block without FSA (``patch_logits`` with the CLIP trunk and the VFM replaced by
                 cached outputs of the right shapes): values, proxy attention, ``A0 V``, logits head.
* ``block_fsa``  the same last block with FSA: ``block_fsa - base`` is what FSA adds per crop.
* ``fsa``        the FSA step alone, ``FeedbackSelfAdaptiveAttention(a0, v, head)`` (fsa_seg/fsa.py), on the
                 ``a0``, ``v`` and logits head of the last block above.
* ``naive``      ``naive_fsa(a0, v, head)`` from tests/naive_fsa.py (the released formulation), same inputs,
                 always fp32.
* ``image``      end to end per image: ``model.test_step`` (data preprocessor, sliding window, resize,
                 class probabilities) on one image.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

REPO_ROOT = Path(__file__).resolve().parents[2]
NAIVE_PATH = REPO_ROOT / "tests" / "naive_fsa.py"
MODEL_CONFIG_DIR = REPO_ROOT / "fsa_seg" / "model_configs"

# Patch-token grid of each VFM for a square crop of side ``crop`` (ProxyCLIP's N), and its feature width.
_VFM_TOKENS = {
    "sam": lambda crop: 64 * 64,              # resized to 1024 x 1024, patch 16
    "tiny-sam": lambda crop: 64 * 64,
    "dino": lambda crop: (crop // 8) ** 2,     # ViT-B/8 on the crop
    "tiny-dino": lambda crop: (crop // 8) ** 2,
    "dinov2": lambda crop: (crop // 14) ** 2,  # ViT-B/14 on the crop
    "mae": lambda crop: (crop // 16) ** 2,     # ViT-B/16 on the crop resized to crop x crop
}
_VFM_CHANNELS = {"sam": 256, "tiny-sam": 16, "tiny-dino": 32}
# Which VFM to use for a grid value of N in the whole-forward parts (real models first).
_VFM_ORDER = ("mae", "dinov2", "dino", "sam")


def vfm_tokens(vfm: Optional[str], crop: int) -> Optional[int]:
    fn = _VFM_TOKENS.get(vfm or "")
    return fn(crop) if fn else None


def vfm_for_tokens(n: int, crop: int) -> Optional[str]:
    for name in _VFM_ORDER:
        if vfm_tokens(name, crop) == n:
            return name
    return None


def proxy_channels(n: int, crop: int) -> int:
    return _VFM_CHANNELS.get(vfm_for_tokens(n, crop) or "", 768)


def grid_for(n: int) -> Tuple[int, int]:
    """The most square ``h x w`` grid with ``h * w == n``."""
    h = int(math.isqrt(n))
    while n % h:
        h -= 1
    return h, n // h


def clip_heads(clip_model: str) -> Tuple[int, int]:
    """``(heads, head_dim)`` of the last CLIP block, from open_clip's (or the packaged) model config."""
    local = MODEL_CONFIG_DIR / f"{clip_model}.json"
    if local.is_file():
        cfg = json.loads(local.read_text())
    else:
        import open_clip

        cfg = open_clip.get_model_config(clip_model)
        if cfg is None:
            raise ValueError(f"unknown open_clip model '{clip_model}'")
    vision = cfg["vision_cfg"]
    head_width = vision.get("head_width", 64)
    return vision["width"] // head_width, head_width


def load_naive():
    spec = importlib.util.spec_from_file_location("fsa_bench_naive_fsa", NAIVE_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def load_config(config: str, cfg_options: Optional[dict] = None):
    from mmengine.config import Config

    if not os.path.isfile(config):
        raise FileNotFoundError(f"config file '{config}' not found")
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def crop_size(cfg) -> int:
    return int(cfg.model.get("slide_crop", 336) or 336)


def class_file(work_dir: str, c: int) -> str:
    """A class-name file with ``c`` single-word classes (the benchmark's ``C`` queries)."""
    path = Path(work_dir) / "classes" / f"c{c}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file():
        path.write_text("".join(f"class{i}\n" for i in range(c)))
    return str(path)


def _random_text_embeddings(self, templates, cache_key):
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    dim = self.backbone.visual.proj.shape[1]
    return F.normalize(torch.randn(len(self.query_words), dim, generator=g), dim=-1)


def build_model(cfg, overrides: Dict, real_text: bool = False):
    """The config's segmentor with ``overrides`` (random weights unless the caller says otherwise)."""
    import fsa_seg  # noqa: F401  (registers the models)
    from fsa_seg.segmentor import FSASegmentor
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    init_default_scope("mmseg")
    model_cfg = cfg.model.copy()
    model_cfg.update(overrides)
    original = FSASegmentor._text_embeddings
    if not real_text:  # only while this model is built: the class is shared with everything else
        FSASegmentor._text_embeddings = _random_text_embeddings
    try:
        model = MODELS.build(model_cfg)
    finally:
        FSASegmentor._text_embeddings = original
    return model.eval()


class _Cached(__import__("torch").nn.Module):
    """Stands in for a sub-network: returns a fixed tensor (its input is ignored)."""

    def __init__(self, value) -> None:
        super().__init__()
        self.value = value

    def forward(self, *args, **kwargs):
        return self.value


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def setup(spec: Dict) -> Tuple[Callable[[], object], Dict, object]:
    """``(fn, meta, device)`` for one measurement ``spec`` (see tools/benchmark.py)."""
    import torch

    part = spec["part"]
    cfg = load_config(spec["config"], spec.get("cfg_options"))
    overrides = dict(spec.get("overrides") or {})
    if not spec.get("real_weights"):
        overrides["random_weights"] = True
    crop = crop_size(cfg)
    meta: Dict = {}
    if part == "image":
        return _setup_image(spec, cfg, overrides, meta)
    overrides["name_path"] = class_file(spec["work_dir"], spec["c"])
    if part in ("whole", "whole_base"):
        overrides["vfm"] = spec["vfm"]
        model = build_model(cfg, overrides, real_text=spec.get("real_weights", False))
        if part == "whole_base":
            model.fsa = None
        device = model.run_device
        crops = torch.randn(1, 3, crop, crop, device=device)
        attention = model.method.attention

        def capture(*args, **kwargs):
            out = attention(*args, **kwargs)
            meta["n"] = int(out.a0.shape[-1])
            return out

        model.method.attention = capture
        meta.update(vfm=spec["vfm"], dtype=str(model.run_dtype).replace("torch.", ""))

        def fn():
            out = model._scores_on_device(crops)
            _sync(device)
            return out

        return fn, meta, device
    return _setup_block(spec, cfg, overrides, crop, meta)


def _setup_block(spec, cfg, overrides, crop, meta):
    """Last-block parts: CLIP tokens of a random crop, random proxy features with ``N`` tokens."""
    import torch
    from fsa_seg.fsa import FeedbackSelfAdaptiveAttention, attend

    part, n = spec["part"], spec["n"]
    if cfg.model.get("vfm") or overrides.get("vfm"):
        overrides["vfm"] = "tiny-dino"      # never run: its output is replaced by cached features
        overrides["vfm_checkpoint"] = None
    model = build_model(cfg, overrides)
    device, dtype = model.run_device, model.run_dtype
    if model.method.needs_proxy:
        crop_hw = (crop, crop)
    else:  # CLIP-native methods attend over the CLIP grid itself (+ the class token): make it N patches
        ph, pw = model.backbone.patch_size
        gh, gw = grid_for(n)
        crop_hw = (gh * ph, gw * pw)
    crops = torch.randn(1, 3, *crop_hw, device=device, dtype=dtype)
    with torch.no_grad():
        x, clip_grid = model.backbone.forward_to_last_block(crops)
    if model.method.needs_proxy:
        proxy = torch.randn(1, proxy_channels(n, crop), *grid_for(n), device=device, dtype=dtype)
        model.vfm = _Cached(proxy)
    model.backbone.forward_to_last_block = lambda img: (x, clip_grid)
    fsa = model.fsa or FeedbackSelfAdaptiveAttention()
    params = fsa.params
    captured = {}

    class Capture(torch.nn.Module):
        def forward(self, a0, v, head, a0_v=None):
            captured.update(a0=a0, v=v, head=head)
            return attend(a0, v)

    model.fsa = Capture()
    with torch.no_grad():
        model.patch_logits(crops)
    a0, v, head = captured["a0"], captured["v"], captured["head"]
    meta.update(n=int(a0.shape[-1]), heads=int(v.shape[1]), head_dim=int(v.shape[-1]),
                dtype=str(dtype).replace("torch.", ""), a0_shape=list(a0.shape))
    if part in ("base", "block_fsa"):
        model.fsa = fsa if part == "block_fsa" else None

        def fn():
            with torch.no_grad():
                out = model.patch_logits(crops)
            _sync(device)
            return out
    elif part == "fsa":
        def fn():
            with torch.no_grad():
                out = fsa(a0, v, head)
            _sync(device)
            return out
    elif part == "naive":
        naive = load_naive()
        a0_32, v_32 = a0.float(), v.float()

        def head_32(t):
            return head(t.to(dtype)).float()

        meta["dtype"] = "float32"

        def fn():
            with torch.no_grad():
                out = naive.naive_fsa(a0_32, v_32, head_32, top_p=params.top_p, lamda=params.lamda,
                                      base_scale=params.base_scale, uniform_scale=params.uniform_scale)
            _sync(device)
            return out
    else:
        raise ValueError(f"unknown part '{part}'")
    return fn, meta, device


def synthetic_image(height: int = 336, width: int = 448, seed: int = 0):
    """A deterministic BGR uint8 image: smooth blobs plus noise (content does not change the cost)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.zeros((height, width, 3), np.float32)
    for ch in range(3):
        for _ in range(4):
            cy, cx = rng.uniform(0, height), rng.uniform(0, width)
            r = rng.uniform(30, 120)
            img[..., ch] += 255 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _rescale_like_test_pipeline(img, short_side: int, long_max: int = 2048):
    """mmseg ``Resize(scale=(long_max, short_side), keep_ratio=True)`` (bilinear)."""
    import cv2

    h, w = img.shape[:2]
    factor = min(long_max / max(h, w), short_side / min(h, w))
    size = (int(w * factor + 0.5), int(h * factor + 0.5))
    if size == (w, h):
        return img
    return cv2.resize(img, size, interpolation=cv2.INTER_LINEAR)


def _setup_image(spec, cfg, overrides, meta):
    import torch
    from mmseg.structures import SegDataSample

    model = build_model(cfg, overrides, real_text=spec.get("real_weights", False))
    device = model.run_device
    source = spec.get("image") or "generated"
    if source == "generated":
        w, h = spec.get("image_size") or (448, 336)
        img = synthetic_image(h, w)
    else:
        import cv2

        img = cv2.imread(source, cv2.IMREAD_COLOR)
        if img is None:
            raise FileNotFoundError(f"cannot read image '{source}'")
        if spec.get("image_short_side"):
            img = _rescale_like_test_pipeline(img, int(spec["image_short_side"]))
    h, w = img.shape[:2]
    tensor = torch.from_numpy(img).permute(2, 0, 1).contiguous()
    attention = model.method.attention
    calls = {"crops": 0}

    def capture(*args, **kwargs):
        out = attention(*args, **kwargs)
        meta["n"] = int(out.a0.shape[-1])
        calls["crops"] += int(out.v.shape[0])
        return out

    model.method.attention = capture
    meta.update(image=source, height=h, width=w, vfm=model_vfm_name(cfg, overrides),
                queries=int(model.num_queries), dtype=str(model.run_dtype).replace("torch.", ""))

    def fn():
        calls["crops"] = 0
        sample = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w)))
        with torch.no_grad():
            out = model.test_step(dict(inputs=[tensor], data_samples=[sample]))
        _sync(device)
        meta["crops"] = calls["crops"]
        return out

    return fn, meta, device


def model_vfm_name(cfg, overrides) -> Optional[str]:
    return overrides.get("vfm", cfg.model.get("vfm"))
