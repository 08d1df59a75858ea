"""What the benchmark times: each part is set up once, then called repeatedly.

Every model is the plain-torch :class:`~fsa_seg.clip_model.CLIPSegModel` (no mmseg), built from a config's
model keys with random weights at the real shapes. Text embeddings are random unit vectors (one per query,
through the model's ``text_embeddings`` argument): with random weights the 80-template prompt ensemble would
be just as meaningless and takes minutes on a CPU; it is computed once per dataset anyway, never per image.

Parts (``N`` proxy tokens, ``C`` queries):

* ``whole``      per-crop forward, ``CLIPSegModel.crop_scores`` on one crop: CLIP up to the last block, the
                 VFM proxy, the last block with FSA, upsampling. ``N`` is set by the VFM.
* ``whole_base`` the same without FSA.
* ``base``       the last block without FSA (``logits_from_features`` on the stored features of one crop:
                 CLIP tokens and random proxy features with ``N`` tokens): values, proxy attention, ``A0 V``,
                 logits head.
* ``block_fsa``  the same last block with FSA: ``block_fsa - base`` is what FSA adds per crop.
* ``fsa``        the FSA step alone, ``FeedbackSelfAdaptiveAttention(a0, v, head)`` (fsa_seg/fsa.py), on the
                 ``a0``, ``v`` and logits head of the last block above (``CLIPSegModel.last_block``).
* ``naive``      ``naive_fsa(a0, v, head)`` (fsa_seg/naive_fsa.py, the released formulation), same inputs,
                 always fp32.
* ``crops``      ``whole`` on a batch of ``batch`` crops (``--crop-memory``: peak memory per crop, next to the
                 estimate that sets ``crop_batch_size=None``,
                 :meth:`~fsa_seg.clip_model.CLIPSegModel.crop_memory_bytes`).
* ``image``      end to end per image: normalisation, sliding window, resize to the image, class
                 probabilities and labels (``CLIPSegModel.predict``) on one image.

SAM3's parts (``sam3_base``, ``sam3_fsa``, ``sam3_step``) are in :mod:`.sam3_workloads`.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from ..resources import MODEL_CONFIG_DIR


def _vfm_order():
    """Which VFM to use for a grid value of N in the whole-forward parts: the registered proxies but the test-only
    ones, in registration order (the paper's four, whose grids differ, then any added)."""
    from ..vfm import VFM_REGISTRY

    return [s for s in VFM_REGISTRY.values() if not s.testing]


def vfm_tokens(vfm: Optional[str], crop: int) -> Optional[int]:
    """Patch tokens of proxy ``vfm``'s grid for a square crop of side ``crop`` (its registry entry), or None."""
    from ..vfm import VFM_REGISTRY

    spec = VFM_REGISTRY.get(vfm or "")
    return spec.tokens(crop) if spec is not None else None


def vfm_for_tokens(n: int, crop: int) -> Optional[str]:
    for spec in _vfm_order():
        if spec.tokens(crop) == n:
            return spec.name
    return None


def proxy_channels(n: int, crop: int) -> int:
    from ..vfm import VFM_REGISTRY

    name = vfm_for_tokens(n, crop)
    return VFM_REGISTRY[name].channels if name else 768


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


def crop_size(model_cfg: Mapping[str, Any]) -> int:
    return int(model_cfg.get("slide_crop", 336) or 336)


def class_file(work_dir: str, c: int) -> str:
    """A class-name file with ``c`` single-word classes (the benchmark's ``C`` queries)."""
    path = Path(work_dir) / "classes" / f"c{c}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file():
        path.write_text("".join(f"class{i}\n" for i in range(c)))
    return str(path)


def random_text_embeddings(num_queries: int, clip_model: str):
    """Random unit embeddings ``[Q, E]`` for the model's queries (E = the CLIP joint embedding size)."""
    import torch
    import torch.nn.functional as F

    local = MODEL_CONFIG_DIR / f"{clip_model}.json"
    if local.is_file():
        width = json.loads(local.read_text())["embed_dim"]
    else:
        import open_clip

        width = open_clip.get_model_config(clip_model)["embed_dim"]
    g = torch.Generator().manual_seed(0)
    return F.normalize(torch.randn(num_queries, width, generator=g), dim=-1)


def build_model(model_cfg: Mapping[str, Any], overrides: Optional[Mapping[str, Any]] = None,
                real_text: bool = False):
    """The CLIP segmentation model of a config's model keys with ``overrides`` (``type`` is ignored)."""
    from ..class_names import load_class_names
    from ..clip_model import CLIPSegModel

    kwargs = {k: v for k, v in dict(model_cfg).items() if k != "type"}
    kwargs.update(overrides or {})
    if not real_text:
        queries, _ = load_class_names(kwargs["name_path"])
        kwargs["text_embeddings"] = random_text_embeddings(len(queries), kwargs.get("clip_model", "ViT-B-16"))
    return CLIPSegModel(**kwargs).eval()


def synced(call: Callable[[], object], device) -> Callable[[], object]:
    """The timed function of a workload: ``call()`` without autograd, returning only once ``device`` has
    finished (CUDA kernels run asynchronously: the clock must stop after them, not after their launch)."""
    import torch

    def fn():
        with torch.no_grad():
            out = call()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out

    return fn


def setup(spec: Dict, model_cfg: Mapping[str, Any]) -> Tuple[Callable[[], object], Dict, object]:
    """``(fn, meta, device)`` for one measurement ``spec`` (see tools/benchmark.py) on ``model_cfg``."""
    import torch

    from . import sam3_workloads

    part = spec["part"]
    if part in sam3_workloads.SAM3_PARTS:
        return sam3_workloads.setup(spec, model_cfg, class_file, synced)
    overrides = dict(spec.get("overrides") or {})
    if not spec.get("real_weights"):
        overrides["random_weights"] = True
    crop = crop_size({**model_cfg, **overrides})
    meta: Dict = {}
    if part == "image":
        return _setup_image(spec, model_cfg, overrides, meta)
    overrides["name_path"] = class_file(spec["work_dir"], spec["c"])
    if part in ("whole", "whole_base", "crops"):
        overrides["vfm"] = spec["vfm"]
        overrides["fsa"] = part != "whole_base"
        model = build_model(model_cfg, overrides, real_text=spec.get("real_weights", False))
        device = model.run_device
        batch = int(spec.get("batch") or 1) if part == "crops" else 1
        crops = torch.randn(batch, 3, crop, crop, device=device, dtype=model.run_dtype)
        with torch.no_grad():
            out, _ = model.last_block(model.crop_features(crops[:1]))
        meta.update(n=int(out.a0.shape[-1]), vfm=spec["vfm"], dtype=str(model.run_dtype).replace("torch.", ""),
                    batch=batch, crop=crop, estimate_bytes=model.crop_memory_bytes())

        return synced(lambda: model.crop_scores(crops), device), meta, device
    return _setup_block(spec, model_cfg, overrides, crop, meta)


def _setup_block(spec, model_cfg, overrides, crop, meta):
    """Last-block parts: CLIP tokens of a random crop, random proxy features with ``N`` tokens."""
    import torch

    from dataclasses import replace

    from ..clip_model import CropFeatures
    from ..naive_fsa import naive_fsa

    part, n = spec["part"], spec["n"]
    if model_cfg.get("vfm") or overrides.get("vfm"):
        overrides["vfm"] = "tiny-dino"      # never run: the proxy features are random tensors of N tokens
        overrides["vfm_checkpoint"] = None
    model = build_model(model_cfg, overrides)
    device, dtype = model.run_device, model.run_dtype
    if model.method.needs_proxy:
        crop_hw = (crop, crop)
    else:  # CLIP-native methods attend over the CLIP grid itself (+ the class token): make it N patches
        ph, pw = model.backbone.patch_size
        gh, gw = grid_for(n)
        crop_hw = (gh * ph, gw * pw)
    crops = torch.randn(1, 3, *crop_hw, device=device, dtype=dtype)
    with torch.no_grad():
        tokens, clip_grid = model.backbone.forward_to_last_block(crops)
    proxy = (torch.randn(1, proxy_channels(n, crop), *grid_for(n), device=device, dtype=dtype)
             if model.method.needs_proxy else None)
    features = CropFeatures(tokens, clip_grid, proxy)
    with_fsa = replace(model.settings, fsa=True)  # the model's FSA parameters, also where its config has FSA off
    fsa = with_fsa.fsa_attention
    params = fsa.params
    with torch.no_grad():
        out, head = model.last_block(features)
    a0, v = out.a0, out.v
    meta.update(n=int(a0.shape[-1]), heads=int(v.shape[1]), head_dim=int(v.shape[-1]),
                dtype=str(dtype).replace("torch.", ""), a0_shape=list(a0.shape))
    if part in ("base", "block_fsa"):
        model.settings = with_fsa if part == "block_fsa" else replace(model.settings, fsa=False)
        fn = synced(lambda: model.logits_from_features(features), device)
    elif part == "fsa":
        fn = synced(lambda: fsa(a0, v, head), device)
    elif part == "naive":
        a0_32, v_32 = a0.float(), v.float()

        def head_32(t):
            return head(t.to(dtype)).float()

        meta["dtype"] = "float32"
        fn = synced(lambda: naive_fsa(a0_32, v_32, head_32, top_p=params.top_p, lamda=params.lamda,
                                      feedback_scale=params.feedback_scale,
                                      isolation_scale=params.isolation_scale), device)
    else:
        raise ValueError(f"unknown part '{part}'")
    return fn, meta, device


def synthetic_image(height: int = 336, width: int = 448, seed: int = 0):
    """A deterministic RGB uint8 image: smooth blobs plus noise (content does not change the cost)."""
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


def resize_short_side(img, short_side: int, long_max: int = 2048):
    """RGB uint8 ``[H, W, 3]`` resized as mmseg's ``Resize(scale=(long_max, short_side), keep_ratio=True)``
    (bilinear, the rescale factor rounded as mmcv rounds it)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    h, w = img.shape[:2]
    factor = min(long_max / max(h, w), short_side / min(h, w))
    size = (int(h * factor + 0.5), int(w * factor + 0.5))
    if size == (h, w):
        return img
    t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float()
    t = F.interpolate(t, size=size, mode="bilinear", align_corners=False)
    return t[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy()


def read_rgb(path: str):
    """RGB uint8 ``[H, W, 3]`` of an image file (Pillow)."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _setup_image(spec, model_cfg, overrides, meta):
    import torch

    from ..sliding_window import windows

    model = build_model(model_cfg, overrides, real_text=spec.get("real_weights", False))
    device = model.run_device
    source = spec.get("image") or "generated"
    if source == "generated":
        w, h = spec.get("image_size") or (448, 336)
        img = synthetic_image(h, w)
    else:
        img = read_rgb(source)
        if spec.get("image_short_side"):
            img = resize_short_side(img, int(spec["image_short_side"]))
    h, w = img.shape[:2]
    pixels = torch.from_numpy(img).permute(2, 0, 1).contiguous().to(device)
    window = (model.slide_crop,) * 2 if model.slide_crop else (h, w)
    stride = (model.slide_stride,) * 2 if model.slide_crop else (h, w)
    padded = tuple(-(-min(side, full) // model.pad_multiple) * model.pad_multiple
                   for side, full in zip(window, (h, w)))
    with torch.no_grad():  # N: the last block's tokens on one (padded) window
        probe = torch.zeros(1, 3, *padded, device=device, dtype=model.run_dtype)
        n = int(model.last_block(model.crop_features(probe))[0].a0.shape[-1])
    meta.update(image=source, height=h, width=w,
                vfm=overrides.get("vfm", model_cfg.get("vfm")) if model.vfm is not None else None,
                queries=int(model.num_queries), crops=len(windows(h, w, window, stride)), n=n,
                dtype=str(model.run_dtype).replace("torch.", ""))

    return synced(lambda: model.predict([model.normalise(pixels)]), device), meta, device
