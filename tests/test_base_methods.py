"""Every base method's last block, with and without FSA, against a plain transcription of its paper /
released code, and end to end through tools/test.py.

The transcriptions below use the open_clip block's weights directly (q/k/v sliced from ``in_proj_weight``,
explicit softmax, a loop over heads) and follow each method's released last block:

* vanilla CLIP:  softmax(q k^T / sqrt(d)) V, out-proj, + x, + FFN(ln_2(.))
* MaskCLIP:      out-proj(V) (no mixing), + x, + FFN(ln_2(.))            (chongzhou96/MaskCLIP, ViT)
* SCLIP:         (softmax(q q^T s) + softmax(k k^T s)) V, out-proj, + x, + FFN   (wangf3014/SCLIP)
* ClearCLIP:     softmax(q q^T s) V, out-proj (no residual, no FFN)      (mc-lan/ClearCLIP)
* NACLIP:        softmax(k k^T s + Gaussian window) V, out-proj (no residual, no FFN) (sinahmr/NACLIP)

then ``ln_post``, ``proj``, L2 normalisation and the text embeddings; the class token is attended and
dropped from the output. ProxyCLIP's transcription lives in test_segmentor.py.
"""
import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from datagen import write_voc
from fsa_seg.apis import evaluate
from fsa_seg.clip_model import CLIPSegModel, CropFeatures
from fsa_seg.fsa import FSAParams, attend, merge_heads
from fsa_seg.last_block import (LAST_BLOCKS, ClearCLIPBlock, MaskCLIPBlock, NACLIPBlock, SCLIPBlock, VanillaBlock,
                                block_finish, build_last_block, list_base_methods, neighbourhood_prior)
from fsa_seg.naive_fsa import naive_fsa
from fsa_seg.plugin import FSAProxySegmentation

REPO = Path(__file__).resolve().parents[1]
NATIVE = ["vanilla", "maskclip", "sclip", "clearclip", "naclip"]


# One prompt template instead of 80: the text tower is not under test here.
FAST = dict(random_weights=True, cache_text=False, templates="single")


# --- transcriptions ---------------------------------------------------------------------------------------
def naive_tokens(clip, crops):
    """Tokens entering the last block: patch embedding, class token, positional embedding resized bicubically
    with scale (g + 0.1) / side (SCLIP/ClearCLIP/NACLIP/ProxyCLIP), ln_pre, all blocks but the last."""
    visual = clip.visual
    patch = visual.conv1.kernel_size[0]
    x = F.conv2d(crops, visual.conv1.weight, stride=patch)
    b, dim, gh, gw = x.shape
    x = x.reshape(b, dim, gh * gw).permute(0, 2, 1)
    x = torch.cat([visual.class_embedding + torch.zeros(b, 1, dim, dtype=x.dtype), x], dim=1)
    pos = visual.positional_embedding
    side = int(math.sqrt(pos.shape[0] - 1))
    if (gh, gw) != (side, side):
        grid_pos = pos[1:].reshape(1, side, side, dim).permute(0, 3, 1, 2)
        grid_pos = F.interpolate(grid_pos, scale_factor=((gh + 0.1) / side, (gw + 0.1) / side), mode="bicubic")
        pos = torch.cat([pos[:1], grid_pos.permute(0, 2, 3, 1).reshape(gh * gw, dim)], dim=0)
    x = visual.ln_pre(x + pos)
    for blk in visual.transformer.resblocks[:-1]:
        x = blk(x)
    return x, (gh, gw)


def projections(block, x):
    dim = block.attn.embed_dim
    w, bias = block.attn.in_proj_weight, block.attn.in_proj_bias
    y = block.ln_1(x)
    return [y @ w[i * dim:(i + 1) * dim].T + bias[i * dim:(i + 1) * dim] for i in range(3)]


def softmax_rows(s):
    e = torch.exp(s - s.max(dim=-1, keepdim=True).values)
    return e / e.sum(dim=-1, keepdim=True)


def per_head(t, heads):
    b, n, dim = t.shape
    return t.reshape(b, n, heads, dim // heads).permute(0, 2, 1, 3)


def naive_head(clip, block, x, text, residual, ffn):
    """Heads-merged attended values -> class logits: out-proj, [+ x], [+ FFN], ln_post, proj, normalise."""
    attn, mlp = block.attn, block.mlp

    def head(attended):
        out = attended @ attn.out_proj.weight.T + attn.out_proj.bias
        if residual:
            out = x + out
        if ffn:
            hidden = mlp.gelu(block.ln_2(out) @ mlp.c_fc.weight.T + mlp.c_fc.bias)
            out = out + hidden @ mlp.c_proj.weight.T + mlp.c_proj.bias
        emb = clip.visual.ln_post(out) @ clip.visual.proj
        return (emb / emb.norm(dim=-1, keepdim=True)) @ text.T

    return head


def head_maps(block, x, score):
    """Per-head attention maps ``[B, h, T, T]`` from ``score(q_i, k_i) -> [B, T, T]``, a loop over heads."""
    q, k, _ = projections(block, x)
    heads = block.attn.num_heads
    d = q.shape[-1] // heads
    return torch.stack([score(q[..., i * d:(i + 1) * d], k[..., i * d:(i + 1) * d], d ** -0.5)
                        for i in range(heads)], dim=1)


def naive_vanilla(block, x, grid):
    return head_maps(block, x, lambda q, k, s: softmax_rows(q @ k.transpose(1, 2) * s)), True, True


def naive_maskclip(block, x, grid):
    b, n, _ = x.shape
    return torch.eye(n, dtype=x.dtype).expand(b, n, n), True, True


def naive_sclip(block, x, grid):
    def csa(q, k, s):
        return softmax_rows(q @ q.transpose(1, 2) * s) + softmax_rows(k @ k.transpose(1, 2) * s)
    return head_maps(block, x, csa), True, True


def naive_clearclip(block, x, grid):
    return head_maps(block, x, lambda q, k, s: softmax_rows(q @ q.transpose(1, 2) * s)), False, False


def naclip_addition(grid, std=5.0, dtype=torch.float32):
    """NACLIP's released construction: a (2h-1) x (2w-1) Gaussian window correlated ('same' padding) with
    one-hot maps of every patch position, then a zero row and column for the class token."""
    gh, gw = grid
    axes = []
    for size in (2 * gh - 1, 2 * gw - 1):
        start = -(size - 1) / 2.0
        axes.append(torch.linspace(start, start + size - 1, size, dtype=dtype) / (std * math.sqrt(2)))
    yy, xx = torch.meshgrid(*axes, indexing="ij")
    window = torch.exp(-(yy ** 2 + xx ** 2))
    one_hot = torch.eye(gh * gw, dtype=dtype).reshape(gh * gw, 1, gh, gw)
    out = F.conv2d(one_hot, window[None, None], padding="same").reshape(gh * gw, gh * gw)
    out = torch.cat([torch.zeros(1, gh * gw, dtype=dtype), out], dim=0)
    return torch.cat([torch.zeros(gh * gw + 1, 1, dtype=dtype), out], dim=1)


def naive_naclip(block, x, grid):
    omega = naclip_addition(grid, dtype=x.dtype)
    return head_maps(block, x, lambda q, k, s: softmax_rows(k @ k.transpose(1, 2) * s + omega)), False, False


NAIVE = {"vanilla": naive_vanilla, "maskclip": naive_maskclip, "sclip": naive_sclip,
         "clearclip": naive_clearclip, "naclip": naive_naclip}


def naive_logits(model, method, crops, fsa, tokens=None):
    """The transcription's patch logits ``[B, Q, gh, gw]`` (and its a0) for ``crops`` (or for the tokens
    ``(x, grid)`` entering the last block, when given)."""
    clip = model.backbone.clip
    block = clip.visual.transformer.resblocks[-1]
    x, grid = tokens if tokens is not None else naive_tokens(clip, crops)
    a0, residual, ffn = NAIVE[method](block, x, grid)
    _, _, v = projections(block, x)
    v = per_head(v, block.attn.num_heads)
    head = naive_head(clip, block, x, model.text_embeddings, residual, ffn)
    if fsa:
        attended = naive_fsa(a0, v, head, lamda=model.fsa.params.lamda)
    elif method == "maskclip":  # MaskCLIP feeds the values straight on
        attended = v
    else:
        attended = torch.stack([a0[:, i] @ v[:, i] for i in range(v.shape[1])], dim=1)
    b, h, n, d = attended.shape
    logits = head(attended.permute(0, 2, 1, 3).reshape(b, n, h * d))[:, 1:]
    return logits.transpose(1, 2).reshape(b, -1, *grid), a0, grid


def set_method(model, method, fsa):
    """The model with ``method`` (its default options) and FSA (the released parameters) on or off."""
    model.settings = replace(model.settings, base_method=method, base_method_cfg=None, fsa=fsa,
                             **{k: getattr(FSAParams(), k) for k in ("top_p", "lamda", "feedback_scale",
                                                                      "isolation_scale")})
    return model


# --- parity, tiny shapes ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return CLIPSegModel(name_path="voc21", clip_model="tiny-ViT-16", base_method="vanilla", vfm=None,
                        precision="fp32", device="cpu", **FAST)


def test_registry_has_every_base_method():
    assert set(list_base_methods()) == set(NATIVE) | {"proxyclip"}
    for name, cls in LAST_BLOCKS.items():
        assert cls.name == name and cls.__doc__ and "et al." in cls.__doc__


@pytest.mark.numerics
@pytest.mark.parametrize("use_fsa", [False, True])
@pytest.mark.parametrize("method", NATIVE)
def test_tiny_last_block_matches_transcription_fp32(tiny_model, method, use_fsa):
    model = set_method(tiny_model, method, use_fsa)
    g = torch.Generator().manual_seed(3)
    crops = torch.randn(2, 3, 96, 144, generator=g)  # 6 x 9 grid: positional embedding resized, not square
    ours = model.patch_logits(crops)
    grid = tuple(ours.shape[-2:])
    expected, a0, naive_grid = naive_logits(model, method, crops, use_fsa)
    assert grid == naive_grid == (6, 9) and ours.shape == expected.shape == (2, model.num_queries, 6, 9)
    assert (ours - expected).abs().max().item() <= 1e-5
    # the method's own attention map, before anything else
    x, _ = model.backbone.forward_to_last_block(crops)
    out = model.method.attention(model.backbone.last_block, x, grid)
    assert out.patch_tokens == slice(1, None) and out.a0.shape[-1] == 1 + 6 * 9
    assert (out.a0 - a0).abs().max().item() <= 1e-6


@pytest.mark.numerics
@pytest.mark.parametrize("use_fsa", [False, True])
@pytest.mark.parametrize("method", NATIVE)
def test_tiny_last_block_matches_transcription_fp64(tiny_model, method, use_fsa):
    model = set_method(tiny_model, method, use_fsa).double()
    try:
        crops = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
        ours = model.patch_logits(crops)
        expected, _, _ = naive_logits(model, method, crops, use_fsa)
        assert ours.dtype == torch.float64
        assert (ours - expected).abs().max().item() <= 1e-10
    finally:
        model.float()


@pytest.mark.numerics
def test_vanilla_is_open_clips_own_last_block(tiny_model):
    model = set_method(tiny_model, "vanilla", False)
    x, grid = model.backbone.forward_to_last_block(torch.randn(2, 3, 64, 80))
    block = model.backbone.last_block
    out = model.method.attention(block, x, grid)
    ours = out.finish(block.attn.out_proj(merge_heads(attend(out.a0, out.v))))
    torch.testing.assert_close(ours, block(x), rtol=0, atol=1e-5)


@pytest.mark.numerics
def test_methods_differ_and_fsa_changes_each(tiny_model):
    crops = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(7))
    outputs = {}
    for method in NATIVE:
        base = set_method(tiny_model, method, False).patch_logits(crops)
        with_fsa = set_method(tiny_model, method, True).patch_logits(crops)
        assert (base - with_fsa).abs().max().item() > 1e-4, method
        outputs[method] = base
    for i, a in enumerate(NATIVE):
        for b in NATIVE[i + 1:]:
            assert (outputs[a] - outputs[b]).abs().max().item() > 1e-4, (a, b)


# --- parity at the real ViT-B/16 shape -------------------------------------------------------------------
@pytest.fixture(scope="module")
def vit_b16(tmp_path_factory):
    names = tmp_path_factory.mktemp("names") / "twenty.txt"
    names.write_text("".join(f"class{i}\n" for i in range(20)))
    torch.manual_seed(0)
    # 20 random unit text embeddings: the text tower is not under test (and is not run)
    text = F.normalize(torch.randn(20, 512, generator=torch.Generator().manual_seed(2)), dim=-1)
    model = CLIPSegModel(name_path=str(names), clip_model="ViT-B-16", base_method="vanilla", vfm=None,
                         precision="fp32", device="cpu", text_embeddings=text, **FAST)
    crops = torch.randn(1, 3, 224, 288, generator=torch.Generator().manual_seed(11))  # 14 x 18 patches
    # The ten last-block checks below share one pass through the first 11 blocks (ours and the transcription's).
    return model, crops, model.backbone.forward_to_last_block(crops), naive_tokens(model.backbone.clip, crops)


@pytest.mark.slow
@pytest.mark.numerics
def test_vit_b16_tokens_match_transcription(vit_b16):
    model, crops, (ours, grid), (expected, naive_grid) = vit_b16
    assert grid == naive_grid == (14, 18) and ours.shape == (1, 1 + 14 * 18, 768)
    assert (ours - expected).abs().max().item() <= 1e-4 * expected.abs().max().item()


@pytest.mark.slow
@pytest.mark.numerics
@pytest.mark.parametrize("use_fsa", [False, True])
@pytest.mark.parametrize("method", NATIVE)
def test_vit_b16_last_block_matches_transcription(vit_b16, method, use_fsa):
    # With FSA the last block runs in float64 (from the fp32 tokens checked above): top-p pruning is a step
    # function, and fp32 rounding that differs between two correct implementations, or between CPU kernel
    # paths, can move an entry across its boundary. Without FSA the block is continuous and is checked in fp32.
    # Both sides start from the same tokens, so that only the last block is compared.
    model, crops, (tokens, grid), _ = vit_b16
    dtype = torch.float64 if use_fsa else torch.float32
    set_method(model, method, use_fsa).to(dtype)
    try:
        ours = model.logits_from_features(CropFeatures(tokens.to(dtype), grid, proxy=None))
        expected, _, _ = naive_logits(model, method, crops, use_fsa, tokens=(tokens.to(dtype), grid))
    finally:
        model.float()
    assert tuple(ours.shape[-2:]) == (14, 18) and ours.shape == (1, 20, 14, 18) and ours.dtype == dtype
    assert (ours - expected).abs().max().item() <= (1e-10 if use_fsa else 1e-5)


# --- the pieces ------------------------------------------------------------------------------------------
@pytest.mark.numerics
def test_naclip_prior_is_the_released_gaussian_window():
    for grid in [(3, 4), (6, 9), (14, 14)]:
        ours = neighbourhood_prior(grid, 5.0)
        torch.testing.assert_close(ours, naclip_addition(grid, dtype=torch.float64), rtol=0, atol=1e-12)
        torch.testing.assert_close(ours.float(), naclip_addition(grid), rtol=0, atol=1e-6)
    prior = neighbourhood_prior((4, 5), 2.0, with_cls=False)
    assert torch.allclose(prior.diagonal(), torch.ones(20, dtype=torch.float64))
    assert prior[0, 1].item() == pytest.approx(math.exp(-1 / 8))       # right neighbour, std 2
    assert prior[0, 6].item() == pytest.approx(math.exp(-2 / 8))       # diagonal neighbour
    assert torch.equal(prior, prior.T)


def test_finish_broadcasts_the_uniform_output_against_the_residual(tiny_model):
    block = tiny_model.backbone.last_block
    x = torch.randn(2, 7, block.attn.embed_dim)
    uniform = torch.randn(2, 1, block.attn.embed_dim)
    with_residual = block_finish(block, x, residual=True, ffn=True)(uniform)
    assert with_residual.shape == (2, 7, block.attn.embed_dim)
    expected = x + uniform
    expected = expected + block.mlp(block.ln_2(expected))
    torch.testing.assert_close(with_residual, expected)
    assert block_finish(block, x, residual=False, ffn=False)(uniform) is uniform


def test_published_residual_and_ffn_choices_and_overrides():
    table = {cls: (cls.residual, cls.ffn) for cls in (VanillaBlock, MaskCLIPBlock, SCLIPBlock, ClearCLIPBlock,
                                                      NACLIPBlock)}
    assert table == {VanillaBlock: (True, True), MaskCLIPBlock: (True, True), SCLIPBlock: (True, True),
                     ClearCLIPBlock: (False, False), NACLIPBlock: (False, False)}
    ablation = build_last_block("maskclip", residual=False, ffn=False)
    assert (ablation.residual, ablation.ffn) == (False, False) and MaskCLIPBlock.residual
    assert build_last_block("naclip", gaussian_std=3.0).gaussian_std == 3.0
    with pytest.raises(TypeError):
        build_last_block("sclip", gaussian_std=3.0)
    with pytest.raises(ValueError, match="gaussian_std"):
        build_last_block("naclip", gaussian_std=0.0)
    with pytest.raises(ValueError, match="unknown base_method"):
        build_last_block("gem")


def test_released_class_without_proxy_is_vanilla_clip():
    with pytest.warns(UserWarning, match="ignores FSA"):
        model = FSAProxySegmentation(clip_type=None, model_type="tiny-ViT-16", vfm_model=None, name_path="voc20",
                                     FSA=True, **FAST)
    model = model.model
    assert model.base_method == "vanilla" and isinstance(model.method, VanillaBlock) and model.vfm is None


def test_switching_the_method_by_config_key():
    from mmengine import Config
    from mmseg.registry import MODELS

    cfg = Config.fromfile(str(REPO / "configs/fsa_proxy_sam_voc.py"))
    cfg.merge_from_dict({"model.base_method": "sclip", "model.fsa": True, "model.clip_model": "tiny-ViT-16",
                         **{f"model.{k}": v for k, v in FAST.items()}})
    model = MODELS.build(cfg.model).model
    assert isinstance(model.method, SCLIPBlock) and model.fsa is not None and model.vfm is None
    assert model.patch_logits(torch.randn(1, 3, 64, 64)).shape == (1, model.num_queries, 4, 4)


# --- end to end through the evaluation of tools/test.py ----------------------------------------------------

@pytest.fixture(scope="module")
def tiny_voc(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc")
    write_voc(root, [(48, 64), (56, 40)])
    return root


E2E = [(f"configs/{m}/{'fsa_' if fsa else ''}{m}_vit-b16_voc21.py", m, fsa) for m in NATIVE
       for fsa in (True, False)]
E2E += [("configs/fsa_proxy_dino_voc21.py", "proxyclip", True),
        ("configs/proxyclip/proxy_dino_vit-b16_voc21.py", "proxyclip", False)]


@pytest.mark.parametrize("config,method,use_fsa", E2E, ids=[Path(c).stem for c, _, _ in E2E])
def test_tools_test_end_to_end(tiny_voc, tmp_path, config, method, use_fsa):
    opts = {"model.clip_model": "tiny-ViT-16", **{f"model.{k}": v for k, v in FAST.items()},
            "test_dataloader.dataset.data_root": str(tiny_voc), "test_dataloader.num_workers": 0}
    if method == "proxyclip":
        opts["model.vfm"] = "tiny-dino"
    metrics = evaluate(str(REPO / config), opts, str(tmp_path))
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["model"]["base_method"] == method and result["model"]["fsa"] is use_fsa
    assert result["model"]["pamr"] is (method == "naclip")
    assert 0.0 <= float(metrics["mIoU"]) <= 100.0 and len(result["per_class"]) == 21
