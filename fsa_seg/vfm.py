"""Proxy vision foundation models (VFMs) for ProxyCLIP: a registry of builders, like ``sam_model_registry``.

Each builder returns a :class:`ProxyFeatures` module that maps an ImageNet-normalised crop ``[B, 3, h, w]``
to patch features ``[B, C, H, W]`` whose pairwise similarities become ProxyCLIP's attention.

| name   | model                              | input to the VFM            | weights                          |
|--------|------------------------------------|-----------------------------|----------------------------------|
| sam    | SAM ViT-B image encoder (neck out) | resized to 1024 x 1024      | sam_vit_b_01ec64.pth (URL/local) |
| dino   | DINO ViT-B/8                       | the crop                    | timm hub / local file            |
| dinov2 | DINOv2 ViT-B/14 with registers     | the crop                    | timm hub / local file            |
| mae    | MAE ViT-B/16                       | resized to crop x crop      | timm hub / local file            |

Position embeddings follow the released proxy code, not timm's resampling (bicubic with antialiasing, by target
size), which gives different embeddings for the same grid:

* DINO (``torch.hub`` ``dino_vitb8``, facebookresearch/dino ``vision_transformer.py``,
  ``interpolate_pos_encoding``): the 28 x 28 checkpoint grid is resized per input with a *scale factor*
  ``(g + 0.1) / 28`` per side (g = input side // 8), bicubic, no antialiasing; unchanged only when the grid has
  28 x 28 tokens and the input is square. The CLS embedding is kept.
* MAE (the released ``mae/pos_embed.py::interpolate_pos_embed`` on the 224-pixel checkpoint): the 14 x 14 grid
  is resized once to the crop's grid (crop // 16 per side) *by size*, bicubic, ``align_corners=False``, no
  antialiasing; the CLS embedding is kept.
* DINOv2 keeps timm's own path (it matches the released DINOv2 proxy).

The resize is computed in float32 (float64 for float64 weights) and cast to the weights' dtype.
"""
from __future__ import annotations

import copy
import functools
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .weights import (WeightsUnavailableError, hub_offline, load_checkpoint_file, load_matching_state_dict,
                      missing_weights, warn_random_weights)

SAM_VIT_B_URL = "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth"


class ProxyFeatures(nn.Module):
    """A VFM reduced to what ProxyCLIP needs: patch features of a crop."""

    #: multiple the crop sides must have so the VFM's patch grid covers the crop exactly (1 = any size)
    patch_multiple: int = 1

    def forward(self, img: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def token_shape(self, height: int, width: int) -> Optional[Tuple[int, int, int]]:
        """``(tokens, width, grid tokens)`` on one ``height x width`` crop: the tokens and width of the model's
        blocks and the size of the output grid, for memory estimates
        (:meth:`fsa_seg.clip_model.CLIPSegModel.crop_memory_bytes`); None: unknown."""
        return None


#: elements of the largest temporary a lean SAM attention call keeps (scores + bias of one query chunk, all
#: crops and heads): 2**24 = 64 MiB in fp32
SAM_ATTENTION_CHUNK_ELEMENTS = 2 ** 24


@functools.lru_cache(maxsize=None)
def _sam_attention_class():
    from segment_anything.modeling.image_encoder import Attention, get_rel_pos

    class LeanRelPosAttention(Attention):
        """segment_anything's ``Attention`` (same parameters, same numbers), computed without its
        ``[B * heads, HW, HW]`` score matrix: the queries go through ``F.scaled_dot_product_attention`` in chunks,
        each with its own slice of the decomposed relative-position bias as the additive mask.

        The released forward adds ``rel_h[q, kh] + rel_w[q, kw]`` (from the *unscaled* queries) to the scaled
        scores of every query ``q`` and key ``(kh, kw)``, then takes the softmax over the keys: rows are
        independent, so any split of the queries gives the same rows. A chunk holds at most ``chunk_elements``
        scores (all crops and heads); on SAM's 64 x 64 global blocks that is 64 MiB instead of 12 x 4096 x 4096
        fp32 scores (805 MB) plus as much again for the bias and the softmax, per crop.
        """

        chunk_elements: int = SAM_ATTENTION_CHUNK_ELEMENTS

        @classmethod
        def replacing(cls, attn: nn.Module) -> "LeanRelPosAttention":
            """This class over ``attn``'s own parameters and submodules (nothing copied or allocated)."""
            lean = cls.__new__(cls)
            lean.__dict__.update({k: copy.copy(v) if isinstance(v, dict) else v for k, v in attn.__dict__.items()})
            return lean

        def forward(self, x: Tensor) -> Tensor:
            batch, height, width, _ = x.shape
            tokens, heads = height * width, self.num_heads
            qkv = self.qkv(x).reshape(batch, tokens, 3, heads, -1).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.reshape(3, batch * heads, tokens, -1).unbind(0)
            if self.use_rel_pos:  # rel_h [BH, HW, H] and rel_w [BH, HW, W], as add_decomposed_rel_pos builds them
                r_q = q.reshape(batch * heads, height, width, -1)
                rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, get_rel_pos(height, height, self.rel_pos_h))
                rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, get_rel_pos(width, width, self.rel_pos_w))
                rel_h, rel_w = rel_h.reshape(batch * heads, tokens, height), rel_w.reshape(batch * heads, tokens, width)
            chunk = max(1, self.chunk_elements // (batch * heads * tokens))
            out = torch.empty_like(q)
            for start in range(0, tokens, chunk):
                rows = slice(start, start + chunk)
                bias = None
                if self.use_rel_pos:
                    bias = (rel_h[:, rows, :, None] + rel_w[:, rows, None, :]).flatten(2)
                out[:, rows] = F.scaled_dot_product_attention(q[:, rows], k, v, attn_mask=bias, scale=self.scale)
            out = out.view(batch, heads, height, width, -1).permute(0, 2, 3, 1, 4).reshape(batch, height, width, -1)
            return self.proj(out)

    return LeanRelPosAttention


def lean_sam_attention(image_encoder: nn.Module) -> nn.Module:
    """Replace every attention module of a segment_anything ``ImageEncoderViT`` (in place) by the lean one of
    :func:`_sam_attention_class` (same parameters, same numbers); returns the encoder."""
    from segment_anything.modeling.image_encoder import Attention

    lean_class = _sam_attention_class()
    for block in image_encoder.blocks:
        if isinstance(block.attn, Attention) and not isinstance(block.attn, lean_class):
            block.attn = lean_class.replacing(block.attn)
    return image_encoder


class SAMImageFeatures(ProxyFeatures):
    """SAM ViT-B image encoder on the crop resized to its 1024 x 1024 input (Kirillov et al., 2023).

    The encoder's attention modules are replaced in place by lean ones (:func:`lean_sam_attention`): the global
    blocks attend over 64 x 64 tokens, whose score matrices would otherwise take ~1.6 GB per crop in fp32.
    """

    def __init__(self, image_encoder: nn.Module, input_size: int = 1024) -> None:
        super().__init__()
        self.image_encoder = lean_sam_attention(image_encoder)
        self.input_size = input_size

    def token_shape(self, height: int, width: int) -> Tuple[int, int, int]:
        """The 1024 x 1024 input's grid, padded to the window size (the window blocks' layout)."""
        proj = self.image_encoder.patch_embed.proj
        grid = self.input_size // proj.kernel_size[0]
        window = max([b.window_size for b in self.image_encoder.blocks] + [1])
        side = -(-grid // window) * window
        return side * side, proj.out_channels, grid * grid

    def forward(self, img: Tensor) -> Tensor:
        img = F.interpolate(img, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return self.image_encoder(img.to(self.image_encoder.patch_embed.proj.weight.dtype))


PosEmbedResize = Callable[[Tensor, Tuple[int, int], Tuple[int, int]], Tensor]
"""``(pos_embed [1, 1 + n*n, C] incl. CLS, token grid (gh, gw), input size (H, W)) -> [1, 1 + gh*gw, C]``."""


def _resize_dtype(pos_embed: Tensor) -> torch.dtype:
    return torch.float64 if pos_embed.dtype == torch.float64 else torch.float32


def _split_square_grid(pos_embed: Tensor) -> Tuple[Tensor, Tensor, int]:
    """CLS embedding [1, 1, C], patch embeddings as a map [1, C, n, n], and n."""
    n = int(round((pos_embed.shape[1] - 1) ** 0.5))
    if n * n != pos_embed.shape[1] - 1:
        raise ValueError(f"position embedding of {pos_embed.shape[1] - 1} patch tokens is not a square grid")
    grid = pos_embed[:, 1:].to(_resize_dtype(pos_embed))
    return pos_embed[:, :1], grid.reshape(1, n, n, -1).permute(0, 3, 1, 2), n


def _join(cls_embed: Tensor, grid: Tensor, dtype: torch.dtype) -> Tensor:
    return torch.cat([cls_embed, grid.permute(0, 2, 3, 1).flatten(1, 2).to(dtype)], dim=1)


def dino_pos_embed(pos_embed: Tensor, grid: Tuple[int, int], image_size: Tuple[int, int]) -> Tensor:
    """DINO's ``interpolate_pos_encoding`` (Caron et al., ICCV 2021; facebookresearch/dino): bicubic resampling
    with the scale factor ``(g + 0.1) / n`` per side, which also sets the sampling positions, no antialiasing.

    Kept as it is only when the token count matches and the *input* is square, as in the released check.
    """
    cls_embed, patches, n = _split_square_grid(pos_embed)
    if grid[0] * grid[1] == n * n and image_size[0] == image_size[1]:
        return pos_embed
    # The + 0.1 makes floor(n * scale) == g despite rounding (facebookresearch/dino issue 8).
    scale = ((grid[0] + 0.1) / n, (grid[1] + 0.1) / n)
    resized = F.interpolate(patches, scale_factor=scale, mode="bicubic", align_corners=False)
    if tuple(resized.shape[-2:]) != tuple(grid):
        raise ValueError(f"DINO position embedding resized to {tuple(resized.shape[-2:])}, expected {grid}")
    return _join(cls_embed, resized, pos_embed.dtype)


def mae_pos_embed(pos_embed: Tensor, grid: Tuple[int, int], image_size: Tuple[int, int]) -> Tensor:
    """The released MAE proxy (He et al., CVPR 2022; ``mae/pos_embed.py::interpolate_pos_embed`` in ProxyCLIP and
    FSA): the checkpoint's square grid resized to the target grid by size, bicubic, ``align_corners=False``, no
    antialiasing; CLS kept. The released model is square (``img_size=slide_crop``) and sees crops resized to it."""
    cls_embed, patches, n = _split_square_grid(pos_embed)
    if tuple(grid) == (n, n):
        return pos_embed
    resized = F.interpolate(patches, size=tuple(grid), mode="bicubic", align_corners=False)
    return _join(cls_embed, resized, pos_embed.dtype)


POS_EMBED_RESIZES: Dict[str, Optional[PosEmbedResize]] = {
    "timm": None,          # timm's own resampling inside forward_features
    "dino": dino_pos_embed,
    "mae": mae_pos_embed,
}


def fused_timm_attention(vit: nn.Module) -> nn.Module:
    """Turn on timm's fused attention (``F.scaled_dot_product_attention``, same numbers) in every attention module
    of ``vit`` that has the switch: timm picks it per process (``TIMM_FUSED_ATTN``, its export mode), and its
    plain path keeps the ``[B, heads, N, N]`` scores (DINO ViT-B/8 on a 336 crop: 12 x 1765^2 per crop and block).
    Returns ``vit``."""
    for module in vit.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = True
    return vit


class TimmViTFeatures(ProxyFeatures):
    """Normalised patch tokens of the last block of a timm ViT (prefix tokens dropped).

    ``pos_embed``: a key of :data:`POS_EMBED_RESIZES`. ``'timm'`` runs timm's ``forward_features``; otherwise
    the tokens are built here (patch embedding, CLS, the given position-embedding resize) and go through timm's
    own blocks and final norm, as the released proxies do.
    """

    def __init__(self, vit: nn.Module, resize_to: Optional[int] = None, pos_embed: str = "timm") -> None:
        super().__init__()
        if pos_embed not in POS_EMBED_RESIZES:
            raise ValueError(f"unknown pos_embed resize '{pos_embed}'; choose one of {list(POS_EMBED_RESIZES)}")
        self.vit = fused_timm_attention(vit)
        self.resize_to = resize_to
        self.pos_embed = pos_embed
        ps = vit.patch_embed.patch_size
        self.patch = ps[0] if isinstance(ps, (tuple, list)) else int(ps)
        self.patch_multiple = 1 if resize_to else self.patch
        if POS_EMBED_RESIZES[pos_embed] is not None:
            # The own token path covers the plain layout only: one CLS token, its embedding inside pos_embed.
            if (getattr(vit, "cls_token", None) is None or getattr(vit, "reg_token", None) is not None
                    or getattr(vit, "no_embed_class", False) or vit.num_prefix_tokens != 1
                    or not getattr(vit, "dynamic_img_size", False)):
                raise ValueError(f"pos_embed '{pos_embed}' needs a timm ViT with one CLS token, no registers, "
                                 "class position embedding and dynamic_img_size=True")

    def _tokens(self, img: Tensor) -> Tensor:
        vit = self.vit
        x = vit.patch_embed(img)  # [B, gh, gw, C] (dynamic_img_size: NHWC, the grid floors partial patches)
        batch, gh, gw, dim = x.shape
        pos = POS_EMBED_RESIZES[self.pos_embed](vit.pos_embed, (gh, gw), (img.shape[-2], img.shape[-1]))
        x = torch.cat([vit.cls_token.expand(batch, -1, -1), x.reshape(batch, gh * gw, dim)], dim=1)
        x = vit.pos_drop(x + pos.to(x.dtype))
        x = vit.norm_pre(vit.patch_drop(x))
        return vit.norm(vit.blocks(x))

    def token_shape(self, height: int, width: int) -> Tuple[int, int, int]:
        if self.resize_to:
            height = width = self.resize_to
        grid = (height // self.patch) * (width // self.patch)
        return self.vit.num_prefix_tokens + grid, self.vit.embed_dim, grid

    def forward(self, img: Tensor) -> Tensor:
        if self.resize_to:
            img = F.interpolate(img, size=(self.resize_to, self.resize_to), mode="bilinear", align_corners=False)
        grid = (img.shape[-2] // self.patch, img.shape[-1] // self.patch)
        img = img.to(self.vit.patch_embed.proj.weight.dtype)
        if POS_EMBED_RESIZES[self.pos_embed] is None:
            tokens = self.vit.forward_features(img)
        else:
            tokens = self._tokens(img)
        tokens = tokens[:, self.vit.num_prefix_tokens:]
        return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, *grid)


def _sam_checkpoint(checkpoint: Optional[str]) -> str:
    if checkpoint:
        return checkpoint
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(SAM_VIT_B_URL))
    if os.path.isfile(cached):
        return cached
    if hub_offline():
        raise missing_weights(
            "SAM ViT-B", f"'{cached}' (not cached)",
            f"Download {SAM_VIT_B_URL} and pass --cfg-options model.vfm_checkpoint=/path/sam_vit_b_01ec64.pth, "
            f"or place it at {cached}.")
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


def _timm_builder(timm_name: str, label: str, resize_to_crop: bool, pos_embed: str = "timm"
                  ) -> Callable[..., ProxyFeatures]:
    def build(checkpoint: Optional[str] = None, random_weights: bool = False, crop_size: int = 336) -> ProxyFeatures:
        import timm

        # At the checkpoint's own size: the weights load without resampling, and pos_embed (when not 'timm')
        # resizes the checkpoint grid as the released code does.
        kwargs = dict(num_classes=0, dynamic_img_size=True)
        if resize_to_crop and pos_embed == "timm":
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
            hub_offline()  # offline: fail at once from the cache, not after minutes of download retries
            try:
                vit = timm.create_model(timm_name, pretrained=True, **kwargs)
            except Exception as err:  # offline: huggingface_hub raises several error types
                hub_id = timm.models.get_pretrained_cfg(timm_name).hf_hub_id
                raise missing_weights(
                    label, f"the HF hub repo '{hub_id}' (cache: ~/.cache/huggingface/hub)",
                    "Run once with network access to fill the cache, or download the weights and pass "
                    "--cfg-options model.vfm_checkpoint=/path/to/file.", err) from err
        return TimmViTFeatures(vit.eval(), resize_to=crop_size if resize_to_crop else None, pos_embed=pos_embed)

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
                                                    global_attn_indexes=(1,), use_rel_pos=True))
        from timm.models.vision_transformer import VisionTransformer

        return TimmViTFeatures(VisionTransformer(patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=0,
                                                 dynamic_img_size=True), pos_embed="dino")

    build.__doc__ = f"Tiny random {kind} proxy (tests only)."
    return build


@dataclass(frozen=True)
class ProxySpec:
    """A proxy model's registry entry: what the model, the config generator, the tables and the speed benchmark
    read about it.

    ``builder(checkpoint=None, random_weights=False, crop_size=336)`` returns a :class:`ProxyFeatures`. The token
    grid of a square crop of side ``crop`` is ``((input_size or crop) // patch) ** 2`` (``input_size``: the side
    the proxy resizes every crop to, e.g. SAM's 1024); ``channels`` is the width of its features. ``lamda`` is
    FSA's sharpening lambda with this proxy (None: the CLIP backbone's). ``configs``: generate its evaluation
    configs (``tools/gen_configs.py``). ``testing``: a test-only model, usable by name but left out of listings,
    "choose one of" messages and generated configs.
    """

    name: str
    builder: Callable[..., ProxyFeatures]
    title: str = ""                    # short title for tables, e.g. 'DINOv2' (default: the name)
    patch: int = 16
    input_size: Optional[int] = None
    channels: int = 768
    lamda: Optional[float] = None
    configs: bool = True
    testing: bool = False

    @property
    def label(self) -> str:
        return self.title or self.name

    def tokens(self, crop: int) -> int:
        """Patch tokens of the proxy's output grid for a ``crop x crop`` window (ProxyCLIP's N)."""
        return ((self.input_size or crop) // self.patch) ** 2


VFM_REGISTRY: Dict[str, ProxySpec] = {}


def register_vfm(name: Union[str, ProxySpec], builder: Optional[Callable[..., ProxyFeatures]] = None,
                 **spec: Any) -> ProxySpec:
    """Add a proxy model: ``register_vfm(ProxySpec(...))``, or ``register_vfm(name, builder, **fields)`` with the
    other :class:`ProxySpec` fields as keywords (docs/extending.md). Returns the entry."""
    entry = name if isinstance(name, ProxySpec) else ProxySpec(name=name, builder=builder, **spec)
    if not entry.name or entry.name in VFM_REGISTRY:
        raise ValueError(f"proxy model needs a new unique name, got '{entry.name}'")
    if not callable(entry.builder):
        raise ValueError(f"proxy model '{entry.name}' needs a builder function")
    VFM_REGISTRY[entry.name] = entry
    return entry


for _spec in (
    ProxySpec("sam", build_sam, "SAM", patch=16, input_size=1024, channels=256),
    ProxySpec("dino", _timm_builder("vit_base_patch8_224.dino", "DINO ViT-B/8", resize_to_crop=False,
                                    pos_embed="dino"), "DINO", patch=8),
    ProxySpec("dinov2", _timm_builder("vit_base_patch14_reg4_dinov2.lvd142m", "DINOv2 ViT-B/14 (registers)",
                                      resize_to_crop=False), "DINOv2", patch=14),
    # FSA's released hyper_param.txt: lamda 4.5 with the MAE proxy, whatever the backbone.
    ProxySpec("mae", _timm_builder("vit_base_patch16_224.mae", "MAE ViT-B/16", resize_to_crop=True,
                                   pos_embed="mae"), "MAE", patch=16, lamda=4.5),
    ProxySpec("tiny-sam", _tiny_builder("sam"), patch=16, input_size=1024, channels=16, testing=True),
    ProxySpec("tiny-dino", _tiny_builder("dino"), patch=8, channels=32, testing=True),
):
    register_vfm(_spec)
del _spec


def list_vfms(include_testing: bool = False) -> Tuple[str, ...]:
    """Registered proxy names (test-only ones with ``include_testing``)."""
    return tuple(n for n, s in VFM_REGISTRY.items() if include_testing or not s.testing)


def get_vfm(name: str) -> ProxySpec:
    """The registry entry of proxy ``name``; ``ValueError`` (one line) lists the choices."""
    try:
        return VFM_REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown vfm '{name}'; choose one of {list(list_vfms())} (or None)") from None


def build_vfm(name: str, checkpoint: Optional[str] = None, random_weights: bool = False,
              crop_size: int = 336) -> ProxyFeatures:
    builder = get_vfm(name).builder
    return builder(checkpoint=checkpoint, random_weights=random_weights, crop_size=crop_size).eval()
