"""FSA-ProxyCLIP segmentor: last-block parity, end to end through tools/test.py, batching, shapes."""
import json
from pathlib import Path

import open_clip
import pytest
import torch
import torch.nn.functional as F

from datagen import write_voc
from fsa_seg.apis import evaluate
from fsa_seg.clip_model import CLIPSegModel
from fsa_seg.naive_fsa import naive_fsa
from fsa_seg.plugin import FSAProxySegmentation, FSASegmentor
from tiny import TINY_CLIP

REPO = Path(__file__).resolve().parents[1]
SHARED_VOC = REPO.parent / "shared" / "data" / "voc_mini"


def tiny_options(data_root, **extra):
    # the dataset's own class names and image scale: a check of the whole VOC21 path
    return {**{f"model.{key}": value for key, value in TINY_CLIP.items()},
            "model.vfm": "tiny-sam", "test_dataloader.dataset.data_root": str(data_root), **extra}


# --- the ProxyCLIP last block, transcribed from the paper / released code --------------------------------
def naive_proxyclip(clip, x, grid, proxy, text, beta=1.2, gamma=3.0):
    """ProxyCLIP's last block written out plainly: returns (a0 per head, v per head, head, logits)."""
    block = clip.visual.transformer.resblocks[-1]
    attn = block.attn
    dim, heads = attn.embed_dim, attn.num_heads
    y = block.ln_1(x)                                                    # [B, 1+N, D]
    v = y @ attn.in_proj_weight[2 * dim:].T + attn.in_proj_bias[2 * dim:]
    v = v[:, 1:]
    b = v.shape[0]
    v = v.reshape(b, grid[0], grid[1], heads, dim // heads).permute(0, 3, 4, 1, 2)   # [B, h, d, gh, gw]
    v = v.reshape(b * heads, dim // heads, grid[0], grid[1])
    v = F.interpolate(v, size=proxy.shape[-2:], mode="bilinear", align_corners=False)
    v = v.reshape(b, heads, dim // heads, -1).permute(0, 1, 3, 2)      # [B, h, M, d]
    feats = F.normalize(proxy.flatten(2), dim=1)
    a0 = []
    for i in range(b):  # the mean is per image
        sim = feats[i].T @ feats[i]
        sim = (sim - sim.mean() * beta) * gamma
        sim[sim < 0] = float("-inf")
        a0.append(sim.softmax(-1))
    a0 = torch.stack(a0)

    def head(attended):
        out = attended @ attn.out_proj.weight.T + attn.out_proj.bias
        emb = clip.visual.ln_post(out) @ clip.visual.proj
        return F.normalize(emb, dim=-1) @ text.T

    attended = torch.einsum("bmn,bhnd->bhmd", a0, v)
    logits = head(attended.permute(0, 2, 1, 3).reshape(b, -1, dim))
    return a0, v, head, logits


@pytest.mark.numerics
@pytest.mark.parametrize("clip_model, use_fsa", [
    ("tiny-ViT-16", False),
    pytest.param("ViT-B-16", True, marks=pytest.mark.slow)])   # the real shapes: 14 x 14 CLIP grid, 28 x 28 proxy
def test_proxyclip_block_matches_transcription(clip_model, use_fsa):
    # With FSA the comparison runs in float64: top-p pruning is a step function, and fp32 rounding differences
    # between two correct implementations can flip an entry at the boundary (see tests/test_fsa_core.py).
    torch.manual_seed(0)
    model = CLIPSegModel(name_path="voc21", clip_model=clip_model, vfm="tiny-dino", fsa=use_fsa,
                         random_weights=True, cache_text=False, templates="single")
    dtype = torch.float64 if use_fsa else torch.float32
    model.to(dtype)
    crops = torch.randn(2, 3, 224, 224, dtype=dtype)
    ours = model.patch_logits(crops)
    grid = tuple(ours.shape[-2:])
    x, clip_grid = model.backbone.forward_to_last_block(crops)
    proxy = model.vfm(model._proxy_input(crops))
    a0, v, head, logits = naive_proxyclip(model.backbone.clip, x, clip_grid, proxy, model.text_embeddings)
    if use_fsa:
        attended = naive_fsa(a0, v, head)
        logits = head(attended.permute(0, 2, 1, 3).reshape(2, -1, v.shape[1] * v.shape[3]))
    expected = logits.transpose(1, 2).reshape(2, -1, *proxy.shape[-2:])
    assert clip_grid == (14, 14) and grid == (28, 28) and ours.shape == (2, 46, 28, 28)
    assert ours.dtype == dtype
    assert (ours - expected).abs().max().item() <= (1e-8 if use_fsa else 1e-5)


@pytest.mark.numerics
def test_fsa_changes_the_prediction():
    torch.manual_seed(0)
    kwargs = dict(name_path="voc21", vfm="tiny-dino", **TINY_CLIP)
    with_fsa, without = CLIPSegModel(fsa=True, **kwargs), CLIPSegModel(fsa=False, **kwargs)
    without.load_state_dict(with_fsa.state_dict())
    crops = torch.randn(1, 3, 112, 112)
    assert (with_fsa.patch_logits(crops) - without.patch_logits(crops)).abs().max() > 1e-4


# --- end to end ------------------------------------------------------------------------------------------
def test_tools_test_end_to_end_on_generated_voc(tmp_path):
    write_voc(tmp_path / "voc", [(120, 160), (150, 100)])
    work = tmp_path / "work"
    opts = tiny_options(tmp_path / "voc", **{"model.slide_crop": 112, "model.slide_stride": 56,
                                             "model.vfm": "tiny-dino"})
    metrics = evaluate(str(REPO / "configs/fsa_proxy_sam_voc.py"), opts, str(work))
    result = json.loads((work / "results.json").read_text())
    assert set(metrics) >= {"aAcc", "mIoU", "mAcc"}
    assert result["metrics"]["mIoU"] == pytest.approx(float(metrics["mIoU"]))
    assert result["cfg_options"]["model.slide_crop"] == 112
    assert len(result["per_class"]) == 21 and "aeroplane" in result["per_class"]
    assert 0.0 <= result["metrics"]["mIoU"] <= 100.0


@pytest.mark.skipif(not SHARED_VOC.is_dir(), reason="../shared/data/voc_mini not present")
def test_tools_test_on_shared_voc_mini(tmp_path):
    opts = tiny_options(SHARED_VOC, **{"model.vfm": "tiny-dino", "test_dataloader.dataset.indices": 3})
    evaluate(str(REPO / "configs/fsa_proxy_sam_voc.py"), opts, str(tmp_path))
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["dataset"]["data_root"] == str(SHARED_VOC)
    assert result["metrics"]["aAcc"] > 0


def _preprocess(model, images):
    from mmseg.structures import SegDataSample

    samples = []
    for img in images:
        s = SegDataSample()
        s.set_metainfo(dict(ori_shape=tuple(img.shape[-2:])))
        samples.append(s)
    return model.data_preprocessor(dict(inputs=images, data_samples=samples), False)


@pytest.mark.numerics
def test_batch_of_two_equals_one_by_one_with_different_sizes():
    torch.manual_seed(0)
    model = FSASegmentor(name_path="voc21", vfm="tiny-dino", slide_crop=112, slide_stride=56, **TINY_CLIP)
    g = torch.Generator().manual_seed(1)
    images = [torch.randint(0, 255, (3, 130, 170), generator=g, dtype=torch.uint8),
              torch.randint(0, 255, (3, 112, 90), generator=g, dtype=torch.uint8)]
    batch = model.predict(**_preprocess(model, images))
    for img, joint in zip(images, batch):
        single = model.predict(**_preprocess(model, [img]))[0]
        assert joint.pred_sem_seg.data.shape == (1, *img.shape[-2:])
        assert torch.equal(joint.pred_sem_seg.data, single.pred_sem_seg.data)
        torch.testing.assert_close(joint.seg_logits.data, single.seg_logits.data, rtol=0, atol=1e-5)


@pytest.mark.parametrize("size", [(100, 260), (90, 60)])  # wider than tall; smaller than the crop
def test_non_square_and_small_images(size):
    model = FSASegmentor(name_path="voc21", vfm="tiny-dino", slide_crop=112, slide_stride=56, **TINY_CLIP)
    image = torch.randint(0, 255, (3, *size), dtype=torch.uint8)
    out = model.predict(**_preprocess(model, [image]))[0]
    assert out.pred_sem_seg.data.shape == (1, *size)
    assert out.seg_logits.data.shape == (21, *size)
    assert 0.0 <= out.seg_logits.data.min() and out.seg_logits.data.max() <= 1.0


@pytest.mark.slow
def test_sam_proxy_sees_the_crop_at_1024():
    model = CLIPSegModel(name_path="voc21", vfm="tiny-sam", slide_crop=0, **TINY_CLIP)
    logits = model.patch_logits(torch.randn(1, 3, 96, 128))
    assert logits.shape[-2:] == (64, 64) and logits.shape == (1, 46, 64, 64)  # N = 4096 tokens, as with SAM ViT-B


@pytest.mark.numerics
def test_whole_image_mode_matches_one_window():
    torch.manual_seed(0)
    model = FSASegmentor(name_path="voc21", vfm="tiny-dino", slide_crop=0, **TINY_CLIP)
    image = torch.randint(0, 255, (3, 96, 128), dtype=torch.uint8)
    whole = model.predict(**_preprocess(model, [image]))[0].seg_logits.data
    model.model.slide_crop, model.model.slide_stride = 256, 256  # one window covering the image
    window = model.predict(**_preprocess(model, [image]))[0].seg_logits.data
    torch.testing.assert_close(whole, window, rtol=0, atol=1e-6)


def test_background_threshold_sends_low_confidence_to_class_zero():
    model = FSASegmentor(name_path="voc21", vfm="tiny-dino", prob_thd=1.01, **TINY_CLIP)  # nothing passes
    image = torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)
    assert model.predict(**_preprocess(model, [image]))[0].pred_sem_seg.data.max() == 0


@pytest.mark.numerics
def test_synonyms_take_the_max_over_their_queries():
    model = CLIPSegModel(name_path="voc21", vfm="tiny-dino", **TINY_CLIP)
    assert model.num_queries > model.num_classes == 21
    scores = torch.randn(model.num_queries, 4, 5)
    probs = model.class_probabilities(scores)
    soft = (scores * model.logit_scale).softmax(0)
    background = [i for i, c in enumerate(model.query_to_class.tolist()) if c == 0]
    torch.testing.assert_close(probs[0], soft[background].max(0).values)


def test_released_class_name_and_keys_build():
    model = FSAProxySegmentation(clip_type=None, model_type="tiny-ViT-16", vfm_model="tiny-dino",
                                 name_path="voc21", random_weights=True, cache_text=False, templates="single",
                                 FSA=False)
    assert model.model.fsa is None and model.model.base_method == "proxyclip"


def test_text_embeddings_are_cached_on_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("FSA_SEG_CACHE", str(tmp_path))
    model = CLIPSegModel(name_path="voc21", vfm="tiny-dino", **TINY_CLIP)
    templates = open_clip.OPENAI_IMAGENET_TEMPLATES[:2]
    first = model._text_embeddings(templates, cache_key="tiny|test")
    assert len(list(tmp_path.rglob("*.pt"))) == 1

    def fail(*args, **kwargs):
        raise AssertionError("the cached embeddings should have been used")

    monkeypatch.setattr(model.backbone, "encode_text", fail)
    torch.testing.assert_close(model._text_embeddings(templates, cache_key="tiny|test"), first)
