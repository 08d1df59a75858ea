"""Proxy vision foundation models (VFMs) for ProxyCLIP: a registry of builders, like ``sam_model_registry``.

Each builder returns a :class:`ProxyFeatures` module that maps an ImageNet-normalised crop ``[B, 3, h, w]``
to patch features ``[B, C, H, W]`` whose pairwise similarities become ProxyCLIP's attention.

| name   | model                              | input to the VFM            | weights                          |
|--------|------------------------------------|-----------------------------|----------------------------------|
| sam    | SAM ViT-B image encoder (neck out) | resized to 1024 x 1024      | sam_vit_b_01ec64.pth (URL/local) |
| dino   | DINO ViT-B/8                       | the crop                    | timm hub / local file            |
| dinov2 | DINOv2 ViT-B/14 with registers     | the crop                    | timm hub / local file            |
| mae    | MAE ViT-B/16                       | resized to crop x crop      | timm hub / local file            |
"""
from __future__ import annotations

import os
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .weights import (WeightsUnavailableError, load_checkpoint_file, load_matching_state_dict,
                      missing_weights, warn_random_weights)

SAM_VIT_B_URL = "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth"


class ProxyFeatures(nn.Module):
    """A VFM reduced to what ProxyCLIP needs: patch features of a crop."""

    #: multiple the crop sides must have so the VFM's patch grid covers the crop exactly (1 = any size)
    patch_multiple: int = 1

    def forward(self, img: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class SAMImageFeatures(ProxyFeatures):
    """SAM ViT-B image encoder on the crop resized to its 1024 x 1024 input (Kirillov et al., 2023)."""

    def __init__(self, image_encoder: nn.Module, input_size: int = 1024) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.input_size = input_size

    def forward(self, img: Tensor) -> Tensor:
        img = F.interpolate(img, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return self.image_encoder(img.to(self.image_encoder.patch_embed.proj.weight.dtype))


class TimmViTFeatures(ProxyFeatures):
    """Normalised patch tokens of the last block of a timm ViT (prefix tokens dropped)."""

    def __init__(self, vit: nn.Module, resize_to: Optional[int] = None) -> None:
        super().__init__()
        self.vit = vit
        self.resize_to = resize_to
        ps = vit.patch_embed.patch_size
        self.patch = ps[0] if isinstance(ps, (tuple, list)) else int(ps)
        self.patch_multiple = 1 if resize_to else self.patch

    def forward(self, img: Tensor) -> Tensor:
        if self.resize_to:
            img = F.interpolate(img, size=(self.resize_to, self.resize_to), mode="bilinear", align_corners=False)
        grid = (img.shape[-2] // self.patch, img.shape[-1] // self.patch)
        tokens = self.vit.forward_features(img.to(self.vit.patch_embed.proj.weight.dtype))
        tokens = tokens[:, self.vit.num_prefix_tokens:]
        return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, *grid)


def _sam_checkpoint(checkpoint: Optional[str]) -> str:
    if checkpoint:
        return checkpoint
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(SAM_VIT_B_URL))
    if os.path.isfile(cached):
        return cached
    try:
        torch.hub.download_url_to_file(SAM_VIT_B_URL, cached, progress=True)
    except Exception as err:  # offline, proxy, disk
        raise missing_weights(
            "SAM ViT-B", f"'{cached}' (not cached; fetching {SAM_VIT_B_URL} failed)",
            f"Download {SAM_VIT_B_URL} and pass --cfg-options model.vfm_checkpoint=/path/sam_vit_b_01ec64.pth, "
            f"or place it at {cached}.", err) from err
    return cached


def build_sam(checkpoint: Optional[str] = None, random_weights: bool = False, crop_size: int = 336) -> ProxyFeatures:
    from segment_anything import sam_model_registry

    sam = sam_model_registry["vit_b"](checkpoint=None)
    if random_weights:
        warn_random_weights("the SAM ViT-B proxy")
    else:
        path = _sam_checkpoint(checkpoint)
        how = f"Pass the SAM ViT-B checkpoint ({SAM_VIT_B_URL}) with model.vfm_checkpoint."
        load_matching_state_dict(sam, load_checkpoint_file(path, "SAM ViT-B", how), "SAM ViT-B", f"'{path}'")
    return SAMImageFeatures(sam.image_encoder)


def _timm_builder(timm_name: str, label: str, resize_to_crop: bool) -> Callable[..., ProxyFeatures]:
    def build(checkpoint: Optional[str] = None, random_weights: bool = False, crop_size: int = 336) -> ProxyFeatures:
        import timm

        kwargs = dict(num_classes=0, dynamic_img_size=True)
        if resize_to_crop:
            kwargs["img_size"] = crop_size
        if random_weights:
            warn_random_weights(f"the {label} proxy")
            vit = timm.create_model(timm_name, pretrained=False, **kwargs)
        elif checkpoint:
            if not os.path.isfile(checkpoint):
                raise missing_weights(label, f"the local file '{checkpoint}' (not found)",
                                      "Pass an existing file with model.vfm_checkpoint.")
            try:  # timm's own filter converts the original (DINO/DINOv2/MAE) checkpoint layouts
                vit = timm.create_model(timm_name, pretrained=True, pretrained_cfg_overlay=dict(file=checkpoint),
                                        **kwargs)
            except (RuntimeError, KeyError) as err:
                raise WeightsUnavailableError(
                    f"the checkpoint '{checkpoint}' does not match {label} ({timm_name}): "
                    f"{str(err).splitlines()[0]}") from err
        else:
            try:
                vit = timm.create_model(timm_name, pretrained=True, **kwargs)
            except Exception as err:  # offline: huggingface_hub raises several error types
                hub_id = timm.models.get_pretrained_cfg(timm_name).hf_hub_id
                raise missing_weights(
                    label, f"the HF hub repo '{hub_id}' (cache: ~/.cache/huggingface/hub)",
                    "Run once with network access to fill the cache, or download the weights and pass "
                    "--cfg-options model.vfm_checkpoint=/path/to/file.", err) from err
        return TimmViTFeatures(vit.eval(), resize_to=crop_size if resize_to_crop else None)

    build.__doc__ = f"{label} proxy features ({timm_name} in timm)."
    return build


def _tiny_builder(kind: str) -> Callable[..., ProxyFeatures]:
    """Tiny random-weight stand-ins with the real input handling, for fast pipeline checks and tests."""

    def build(checkpoint: Optional[str] = None, random_weights: bool = False, crop_size: int = 336) -> ProxyFeatures:
        if not random_weights or checkpoint:
            raise ValueError(f"vfm 'tiny-{kind}' is a random-weight test model: set model.random_weights=True "
                             f"and no vfm_checkpoint")
        if kind == "sam":
            from segment_anything.modeling import ImageEncoderViT

            return SAMImageFeatures(ImageEncoderViT(img_size=1024, patch_size=16, embed_dim=32, depth=2,
                                                    num_heads=2, out_chans=16, window_size=8,
                                                    global_attn_indexes=(1,)))
        from timm.models.vision_transformer import VisionTransformer

        return TimmViTFeatures(VisionTransformer(patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=0,
                                                 dynamic_img_size=True))

    build.__doc__ = f"Tiny random {kind} proxy (tests only)."
    return build


VFM_REGISTRY: Dict[str, Callable[..., ProxyFeatures]] = {
    "sam": build_sam,
    "dino": _timm_builder("vit_base_patch8_224.dino", "DINO ViT-B/8", resize_to_crop=False),
    "dinov2": _timm_builder("vit_base_patch14_reg4_dinov2.lvd142m", "DINOv2 ViT-B/14 (registers)",
                            resize_to_crop=False),
    "mae": _timm_builder("vit_base_patch16_224.mae", "MAE ViT-B/16", resize_to_crop=True),
    "tiny-sam": _tiny_builder("sam"),
    "tiny-dino": _tiny_builder("dino"),
}


def register_vfm(name: str, builder: Callable[..., ProxyFeatures]) -> Callable[..., ProxyFeatures]:
    """Add a proxy model: ``builder(checkpoint=None, random_weights=False, crop_size=336)`` returns a
    :class:`ProxyFeatures` (README, "Extending")."""
    if not name or name in VFM_REGISTRY:
        raise ValueError(f"proxy model needs a new unique name, got '{name}'")
    VFM_REGISTRY[name] = builder
    return builder


def list_vfms() -> Tuple[str, ...]:
    return tuple(VFM_REGISTRY)


def build_vfm(name: str, checkpoint: Optional[str] = None, random_weights: bool = False,
              crop_size: int = 336) -> ProxyFeatures:
    try:
        builder = VFM_REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown vfm '{name}'; choose one of {list(list_vfms())} (or None)") from None
    return builder(checkpoint=checkpoint, random_weights=random_weights, crop_size=crop_size).eval()
