"""Proxy position embeddings follow the released code, not timm's antialiased resampling.

References transcribed below (plain, line by line):
* DINO: facebookresearch/dino ``vision_transformer.py``, ``VisionTransformer.interpolate_pos_encoding`` and
  ``prepare_tokens`` / ``get_intermediate_layers`` (the ``torch.hub`` ``dino_vitb8`` model FSA and ProxyCLIP load).
* MAE: ``mae/pos_embed.py::interpolate_pos_embed`` and ``mae/models_vit.py::VisionTransformer.forward_features``
  (``global_pool=False``), identical in github.com/chi-chi-zx/FSA and github.com/mc-lan/ProxyCLIP.

Random weights; the position embeddings are a smooth 2-D sin-cos map (as trained embeddings are) or random.
Each comparison also checks that timm's default resampling would fail the same tolerance.
"""
import math

import pytest
import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed

from fsa_seg.vfm import (POS_EMBED_RESIZES, SAMImageFeatures, TimmViTFeatures, build_vfm, dino_pos_embed,
                         mae_pos_embed)

pytestmark = pytest.mark.numerics

TOL32, TOL64 = 1e-6, 1e-12


# ----------------------------------------------------------------------------- transcriptions of the released code
def released_dino_interpolate_pos_encoding(pos_embed, x, w, h, patch_size):
    """facebookresearch/dino, VisionTransformer.interpolate_pos_encoding (x: tokens incl. CLS; w, h: x's
    input dims 2 and 3, named as there)."""
    npatch = x.shape[1] - 1
    N = pos_embed.shape[1] - 1
    if npatch == N and w == h:
        return pos_embed
    class_pos_embed = pos_embed[:, 0]
    patch_pos_embed = pos_embed[:, 1:]
    dim = x.shape[-1]
    w0 = w // patch_size
    h0 = h // patch_size
    w0, h0 = w0 + 0.1, h0 + 0.1
    patch_pos_embed = F.interpolate(
        patch_pos_embed.reshape(1, int(math.sqrt(N)), int(math.sqrt(N)), dim).permute(0, 3, 1, 2),
        scale_factor=(w0 / math.sqrt(N), h0 / math.sqrt(N)),
        mode='bicubic',
    )
    assert int(w0) == patch_pos_embed.shape[-2] and int(h0) == patch_pos_embed.shape[-1]
    patch_pos_embed = patch_pos_embed.permute(0, 2, 3, 1).view(1, -1, dim)
    return torch.cat((class_pos_embed.unsqueeze(0), patch_pos_embed), dim=1)


def released_dino_features(vit, img, patch_size=8):
    """dino's prepare_tokens + get_intermediate_layers(x)[0] (last block, then norm), run on the same weights."""
    B, nc, w, h = img.shape
    x = vit.patch_embed.proj(img).flatten(2).transpose(1, 2)
    cls_tokens = vit.cls_token.expand(B, -1, -1)
    x = torch.cat((cls_tokens, x), dim=1)
    x = x + released_dino_interpolate_pos_encoding(vit.pos_embed, x, w, h, patch_size)
    for blk in vit.blocks:
        x = blk(x)
    return vit.norm(x)


def released_mae_interpolate_pos_embed(num_patches, model_pos_embed_len, checkpoint_model):
    """mae/pos_embed.py::interpolate_pos_embed for a model built with img_size=slide_crop."""
    if 'pos_embed' in checkpoint_model:
        pos_embed_checkpoint = checkpoint_model['pos_embed']
        embedding_size = pos_embed_checkpoint.shape[-1]
        num_extra_tokens = model_pos_embed_len - num_patches
        orig_size = int((pos_embed_checkpoint.shape[-2] - num_extra_tokens) ** 0.5)
        new_size = int(num_patches ** 0.5)
        if orig_size != new_size:
            extra_tokens = pos_embed_checkpoint[:, :num_extra_tokens]
            pos_tokens = pos_embed_checkpoint[:, num_extra_tokens:]
            pos_tokens = pos_tokens.reshape(-1, orig_size, orig_size, embedding_size).permute(0, 3, 1, 2)
            pos_tokens = F.interpolate(pos_tokens, size=(new_size, new_size), mode='bicubic', align_corners=False)
            pos_tokens = pos_tokens.permute(0, 2, 3, 1).flatten(1, 2)
            new_pos_embed = torch.cat((extra_tokens, pos_tokens), dim=1)
            checkpoint_model['pos_embed'] = new_pos_embed


def released_mae_features(vit, pos_embed, img):
    """models_vit.VisionTransformer.forward_features (global_pool=False) with the interpolated pos_embed."""
    B = img.shape[0]
    x = vit.patch_embed.proj(img).flatten(2).transpose(1, 2)
    cls_tokens = vit.cls_token.expand(B, -1, -1)
    x = torch.cat((cls_tokens, x), dim=1)
    x = x + pos_embed
    for blk in vit.blocks:
        x = blk(x)
    return vit.norm(x[:, 1:])


# ------------------------------------------------------------------------------------------------------ helpers
def sincos_pos_embed(n, dim, dtype=torch.float32):
    """A smooth [1, 1 + n*n, dim] 2-D sin-cos embedding (CLS row random) - what trained grids look like."""
    g = torch.arange(n, dtype=torch.float64)
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    ys, xs = torch.meshgrid(g, g, indexing="ij")
    parts = [f(c.reshape(-1, 1) * omega) for c in (ys, xs) for f in (torch.sin, torch.cos)]
    grid = torch.cat(parts, dim=1)
    cls = torch.randn(1, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    return torch.cat([cls, grid], 0)[None].to(dtype)


def tokens_like(pos_embed, grid):
    return torch.zeros(1, 1 + grid[0] * grid[1], pos_embed.shape[-1], dtype=pos_embed.dtype)


def timm_default(pos_embed, grid):
    """What timm does for a new grid (dynamic_img_size, or loading a checkpoint into another img_size)."""
    n = int(math.sqrt(pos_embed.shape[1] - 1))
    return resample_abs_pos_embed(pos_embed, new_size=list(grid), old_size=[n, n], num_prefix_tokens=1)


def grid_to_map(features, grid):
    return features.transpose(1, 2).reshape(features.shape[0], -1, *grid)


# ------------------------------------------------------------------------------------------------------- DINO
@pytest.mark.parametrize("height,width", [(336, 336), (96, 120), (448, 336), (231, 224), (120, 64)])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, TOL32), (torch.float64, TOL64)])
def test_dino_resize_equals_released(height, width, dtype, tol):
    torch.manual_seed(0)
    for pos in (sincos_pos_embed(28, 768, dtype), 0.02 * torch.randn(1, 785, 768, dtype=dtype)):
        grid = (height // 8, width // 8)
        ours = dino_pos_embed(pos, grid, (height, width))
        ref = released_dino_interpolate_pos_encoding(pos, tokens_like(pos, grid), height, width, 8)
        assert ours.shape == ref.shape == (1, 1 + grid[0] * grid[1], 768) and ours.dtype == dtype
        assert (ours - ref).abs().max() <= tol
        assert torch.equal(ours[:, 0], pos[:, 0])  # CLS kept
        # timm's default (by target size, antialiased) is a different embedding: it would fail this test.
        assert (timm_default(pos, grid) - ref).abs().max() > 1000 * tol


def test_dino_resize_keeps_the_grid_only_for_square_inputs():
    pos = sincos_pos_embed(28, 64)
    assert dino_pos_embed(pos, (28, 28), (224, 224)) is pos
    # 28 x 28 tokens from a non-square 231 x 224 input: the released code still resamples (scale 28.1 / 28).
    moved = dino_pos_embed(pos, (28, 28), (231, 224))
    ref = released_dino_interpolate_pos_encoding(pos, tokens_like(pos, (28, 28)), 231, 224, 8)
    assert (moved - ref).abs().max() <= TOL32 and (moved - pos).abs().max() > 1e-4


def test_dino_proxy_features_equal_released_pipeline():
    torch.manual_seed(0)
    proxy = build_vfm("dino", random_weights=True)
    vit = proxy.vit
    assert isinstance(proxy, TimmViTFeatures) and proxy.pos_embed == "dino"
    assert vit.pos_embed.shape == (1, 785, 768)  # the 28 x 28 checkpoint grid, not resampled at build time
    assert isinstance(vit.norm, torch.nn.LayerNorm)  # dino's get_intermediate_layers ends with its norm
    with torch.no_grad():
        vit.pos_embed.copy_(sincos_pos_embed(28, 768))
        img = torch.randn(1, 3, 96, 112)
        ours = proxy(img)
        ref = grid_to_map(released_dino_features(vit, img)[:, 1:], (12, 14))
        timm_path = grid_to_map(vit.forward_features(img)[:, 1:], (12, 14))
    assert ours.shape == (1, 768, 12, 14)
    assert (ours - ref).abs().max() <= 1e-4
    assert (timm_path - ref).abs().max() > 1e-2  # timm's own path would fail


def test_tiny_dino_uses_the_dino_resize():
    proxy = build_vfm("tiny-dino", random_weights=True)
    assert proxy.pos_embed == "dino"
    with torch.no_grad():
        img = torch.randn(2, 3, 64, 72)
        ref = grid_to_map(released_dino_features(proxy.vit, img)[:, 1:], (8, 9))
        assert (proxy(img) - ref).abs().max() <= 1e-5


# -------------------------------------------------------------------------------------------------------- MAE
@pytest.mark.parametrize("crop", [336, 448, 112])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, TOL32), (torch.float64, TOL64)])
def test_mae_resize_equals_released(crop, dtype, tol):
    torch.manual_seed(0)
    for pos in (sincos_pos_embed(14, 768, dtype), 0.02 * torch.randn(1, 197, 768, dtype=dtype)):
        new = crop // 16
        checkpoint = {"pos_embed": pos.clone()}
        released_mae_interpolate_pos_embed(new * new, 1 + new * new, checkpoint)
        ours = mae_pos_embed(pos, (new, new), (crop, crop))
        assert ours.shape == checkpoint["pos_embed"].shape == (1, 1 + new * new, 768)
        assert (ours - checkpoint["pos_embed"]).abs().max() <= tol
        assert torch.equal(ours[:, 0], pos[:, 0])
        assert (timm_default(pos, (new, new)) - checkpoint["pos_embed"]).abs().max() > 1000 * tol


def test_mae_proxy_features_equal_released_pipeline():
    import timm
    from timm.models.vision_transformer import checkpoint_filter_fn

    torch.manual_seed(0)
    proxy = build_vfm("mae", random_weights=True, crop_size=256)  # 336: see the test above
    vit = proxy.vit
    assert proxy.pos_embed == "mae" and proxy.resize_to == 256
    assert vit.pos_embed.shape == (1, 197, 768)  # the 14 x 14 checkpoint grid, kept
    assert isinstance(vit.norm, torch.nn.LayerNorm)  # models_vit (global_pool=False) ends with norm
    with torch.no_grad():
        vit.pos_embed.copy_(sincos_pos_embed(14, 768))
        checkpoint = {k: v.clone() for k, v in vit.state_dict().items()}
        img = torch.randn(1, 3, 120, 100)
        ours = proxy(img)
        crop = F.interpolate(img, size=(256, 256), mode="bilinear", align_corners=False)
        released = {"pos_embed": checkpoint["pos_embed"].clone()}
        released_mae_interpolate_pos_embed(256, 257, released)
        ref = grid_to_map(released_mae_features(vit, released["pos_embed"], crop), (16, 16))
        # The former path: a timm model at img_size=256 loading the 224 checkpoint (its loader resamples
        # pos_embed; the blocks are the same, so a model without blocks is enough to get that embedding).
        old = timm.create_model("vit_base_patch16_224.mae", pretrained=False, num_classes=0, img_size=256, depth=0)
        old_pos = checkpoint_filter_fn({"pos_embed": checkpoint["pos_embed"]}, old)["pos_embed"]
        assert old_pos.shape == (1, 257, 768)
        old_features = grid_to_map(released_mae_features(vit, old_pos, crop), (16, 16))
    assert ours.shape == (1, 768, 16, 16)
    assert (ours - ref).abs().max() <= 1e-4
    assert (old_features - ref).abs().max() > 1e-2  # timm's default would fail


# --------------------------------------------------------------------------------------------- unchanged ones
def test_dinov2_keeps_timms_path():
    torch.manual_seed(0)
    proxy = build_vfm("dinov2", random_weights=True)
    assert proxy.pos_embed == "timm" and POS_EMBED_RESIZES["timm"] is None
    with torch.no_grad():
        img = torch.randn(1, 3, 56, 70)
        ref = proxy.vit.forward_features(img)[:, proxy.vit.num_prefix_tokens:]
        assert torch.equal(proxy(img), grid_to_map(ref, (4, 5)))


def test_sam_proxy_unchanged():
    proxy = build_vfm("tiny-sam", random_weights=True)
    assert isinstance(proxy, SAMImageFeatures)
    with torch.no_grad():
        img = torch.randn(1, 3, 40, 56)
        ref = proxy.image_encoder(F.interpolate(img, size=(1024, 1024), mode="bilinear", align_corners=False))
        assert torch.equal(proxy(img), ref)


def test_own_token_path_refuses_other_layouts():
    from timm.models.vision_transformer import VisionTransformer

    vit = VisionTransformer(patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=0, reg_tokens=4,
                            dynamic_img_size=True)
    with pytest.raises(ValueError, match="one CLS token, no registers"):
        TimmViTFeatures(vit, pos_embed="dino")
    with pytest.raises(ValueError, match="unknown pos_embed resize 'bilinear'"):
        TimmViTFeatures(vit, pos_embed="bilinear")
