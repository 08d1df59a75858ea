"""The proxy models' and the CLIP tower's attention is exact and lean: the forward the package runs equals the
libraries' plain forward (scores, softmax, weighted sum), and no ``[.., N, N]`` score matrix is ever made.

* SAM (segment_anything ``ImageEncoderViT``): its ``Attention`` modules are replaced by
  ``fsa_seg.vfm``'s query-chunked SDPA with the decomposed relative-position bias as the per-chunk mask;
* DINO / DINOv2 / MAE (timm): the builder turns on timm's fused attention (SDPA) whatever the process default;
* CLIP (open_clip): ``nn.MultiheadAttention`` called with ``need_weights=False`` (SDPA inside torch).
"""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

pytestmark = pytest.mark.numerics

TOL = {torch.float32: dict(rtol=1e-5, atol=2e-6), torch.float64: dict(rtol=1e-12, atol=1e-13)}


class ShapeRecorder(TorchDispatchMode):
    """The shapes of every tensor an aten op returns inside the block."""

    def __init__(self):
        super().__init__()
        self.shapes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.shapes += [tuple(t.shape) for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        return out

    def square(self, n):
        """Shapes ending in ``n x n`` (a score matrix over ``n`` tokens)."""
        return [s for s in self.shapes if len(s) >= 2 and s[-2:] == (n, n)]


def recorded(fn):
    with torch.no_grad(), ShapeRecorder() as rec:
        out = fn()
    return out, rec


# --------------------------------------------------------------------------------------------------- SAM
def _sam_attention(dtype, size=(12, 10), dim=64, heads=4):
    from segment_anything.modeling.image_encoder import Attention

    torch.manual_seed(0)
    attn = Attention(dim, heads, use_rel_pos=True, input_size=size).to(dtype).eval()
    torch.nn.init.normal_(attn.rel_pos_h)  # zero-initialised in the library: make the bias matter
    torch.nn.init.normal_(attn.rel_pos_w)
    return attn


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("chunk_elements", [None, 2 * 4 * 120 * 7, 1])
def test_sam_lean_attention_equals_plain(dtype, chunk_elements):
    from fsa_seg.vfm import _sam_attention_class

    plain = _sam_attention(dtype)
    lean = _sam_attention_class().replacing(plain)
    if chunk_elements is not None:  # 7 queries a chunk (a partial last one), one query a chunk
        lean.chunk_elements = chunk_elements
    x = torch.randn(2, 12, 10, 64, dtype=dtype)
    with torch.no_grad():
        expected, got = plain(x), lean(x)
    assert got.dtype == dtype
    # the bias is large against the scores: a dropped or transposed bias term moves the output far more
    assert (plain(x) - plain.proj(plain.qkv(x)[..., 128:])).abs().max() > 0.1
    torch.testing.assert_close(got, expected, **TOL[dtype])


def test_sam_lean_attention_keeps_no_score_matrix():
    from fsa_seg.vfm import _sam_attention_class

    plain = _sam_attention(torch.float32, size=(32, 32), dim=32, heads=2)
    lean = _sam_attention_class().replacing(plain)
    lean.chunk_elements = 2 ** 16
    x = torch.randn(1, 32, 32, 32)
    expected, rec_plain = recorded(lambda: plain(x))
    got, rec_lean = recorded(lambda: lean(x))
    torch.testing.assert_close(got, expected, **TOL[torch.float32])
    assert rec_plain.square(1024), "the recorder sees the plain forward's [BH, N, N] scores"
    assert not rec_lean.square(1024)
    assert max(torch.Size(s).numel() for s in rec_lean.shapes) <= 2 ** 16 + 2 * 1024 * 32 * 3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sam_features_equal_the_plain_encoder(dtype):
    """The whole encoder (window and global blocks, neck) after the replacement, against segment_anything's."""
    from segment_anything.modeling import ImageEncoderViT

    from fsa_seg.vfm import SAMImageFeatures, _sam_attention_class

    torch.manual_seed(0)
    encoder = ImageEncoderViT(img_size=128, patch_size=16, embed_dim=32, depth=2, num_heads=2, out_chans=16,
                              window_size=4, global_attn_indexes=(1,), use_rel_pos=True).to(dtype).eval()
    for block in encoder.blocks:
        torch.nn.init.normal_(block.attn.rel_pos_h)
        torch.nn.init.normal_(block.attn.rel_pos_w)
    plain = copy.deepcopy(encoder)
    features = SAMImageFeatures(encoder, input_size=128)
    assert all(isinstance(b.attn, _sam_attention_class()) for b in features.image_encoder.blocks)
    for block in features.image_encoder.blocks:
        block.attn.chunk_elements = 100  # several chunks
    x = torch.randn(2, 3, 128, 128, dtype=dtype)
    with torch.no_grad():
        torch.testing.assert_close(features(x), plain(x), **TOL[dtype])


def test_sam_lean_attention_keeps_the_parameters():
    from fsa_seg.vfm import _sam_attention_class

    plain = _sam_attention(torch.float32)
    lean = _sam_attention_class().replacing(plain)
    assert lean.qkv is plain.qkv and lean.proj is plain.proj and lean.rel_pos_h is plain.rel_pos_h
    assert list(lean.state_dict()) == list(plain.state_dict())


def test_sam_builder_uses_lean_attention():
    from fsa_seg.vfm import _sam_attention_class, build_vfm

    vfm = build_vfm("tiny-sam", random_weights=True)
    assert all(isinstance(b.attn, _sam_attention_class()) for b in vfm.image_encoder.blocks)


# -------------------------------------------------------------------------------------------------- timm
def _plain_copy(features):
    plain = copy.deepcopy(features)
    for module in plain.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = False
    return plain


@pytest.mark.parametrize("name,size", [pytest.param("dino", 64, marks=pytest.mark.slow),
                                       pytest.param("dinov2", 56, marks=pytest.mark.slow),
                                       pytest.param("mae", 64, marks=pytest.mark.slow), ("tiny-dino", 64)])
def test_timm_proxies_use_fused_attention_with_plain_numbers(name, size, monkeypatch):
    from fsa_seg.vfm import build_vfm

    # a process whose timm default is the plain path (export mode; TIMM_FUSED_ATTN=0 acts the same)
    monkeypatch.setattr("timm.layers.config._EXPORTABLE", True)
    from timm.layers import use_fused_attn

    assert not use_fused_attn()
    torch.manual_seed(0)
    vfm = build_vfm(name, random_weights=True, crop_size=size)
    flags = [m.fused_attn for m in vfm.modules() if hasattr(m, "fused_attn")]
    assert flags and all(flags)
    plain = _plain_copy(vfm)
    x = torch.randn(1, 3, size, size)
    got, rec = recorded(lambda: vfm(x))
    expected, rec_plain = recorded(lambda: plain(x))
    tokens = vfm.vit.num_prefix_tokens + got.shape[-2] * got.shape[-1]
    assert rec_plain.square(tokens) and not rec.square(tokens)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)  # 12 random ViT-B blocks, outputs ~1


def test_timm_fused_attention_equals_plain_fp64():
    from fsa_seg.vfm import build_vfm

    torch.manual_seed(0)
    vfm = build_vfm("tiny-dino", random_weights=True).double()
    x = torch.randn(2, 3, 48, 40, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(vfm(x), _plain_copy(vfm)(x), **TOL[torch.float64])


# -------------------------------------------------------------------------------------------------- CLIP
def _plain_resblock(block, x):
    """open_clip's ResidualAttentionBlock (batch-first) with the attention written out."""
    attn = block.attn
    y = block.ln_1(x)
    q, k, v = F.linear(y, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    b, n, d = q.shape
    heads = attn.num_heads
    q, k, v = (t.reshape(b, n, heads, d // heads).transpose(1, 2) for t in (q, k, v))
    scores = (q @ k.transpose(-2, -1)) / (d // heads) ** 0.5
    mixed = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, d)
    x = x + block.ls_1(attn.out_proj(mixed))
    return x + block.ls_2(block.mlp(block.ln_2(x)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_clip_tower_attention_is_sdpa_with_plain_numbers(dtype):
    import open_clip

    from fsa_seg.clip_backbone import CLIPBackbone, create_clip

    torch.manual_seed(0)
    clip = create_clip("tiny-ViT-16", random_weights=True).to(dtype)
    backbone = CLIPBackbone(clip, open_clip.get_tokenizer("tiny-ViT-16"))
    img = torch.randn(2, 3, 96, 80, dtype=dtype)
    (tokens, grid), rec = recorded(lambda: backbone.forward_to_last_block(img))
    n = 1 + grid[0] * grid[1]
    assert not rec.square(n), "the CLIP tower made an N x N score matrix"
    visual = backbone.visual
    with torch.no_grad():
        x = visual.conv1(img).flatten(2).transpose(1, 2)
        from fsa_seg.clip_backbone import interpolate_pos_embed

        cls = visual.class_embedding.view(1, 1, -1).expand(x.shape[0], -1, -1)
        x = visual.ln_pre(torch.cat([cls, x], dim=1) + interpolate_pos_embed(visual.positional_embedding, grid))
        for block in visual.transformer.resblocks[:-1]:
            x = _plain_resblock(block, x)
    torch.testing.assert_close(tokens, x, **TOL[dtype])
