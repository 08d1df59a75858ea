"""PAMR post-refinement: a pixel-by-pixel transcription of the published procedure, its properties, and the
segmentor switch."""
from dataclasses import replace

import pytest
import torch

from fsa_seg.pamr import PAMR
from fsa_seg.plugin import FSASegmentor

OFFSETS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]


def naive_pamr(image, scores, steps, dilations):
    """One image ``[K, H, W]``, scores ``[C, H, W]``: loops over pixels and neighbours (borders clamp)."""
    k, h, w = image.shape
    pixel = lambda t, y, x: t[:, min(max(y, 0), h - 1), min(max(x, 0), w - 1)]  # noqa: E731
    weights = torch.zeros(h, w, 8 * len(dilations), dtype=torch.float64)
    for y in range(h):
        for x in range(w):
            window = []
            diffs = []
            for d in dilations:
                window.append(pixel(image, y, x))
                for dy, dx in OFFSETS:
                    n = pixel(image, y + dy * d, x + dx * d)
                    window.append(n)
                    diffs.append((image[:, y, x] - n).abs())
            sigma = torch.stack(window).std(dim=0)                      # per channel, over the 9 * |D| values
            aff = torch.stack([(-diff / (1e-8 + 0.1 * sigma)).mean() for diff in diffs])
            weights[y, x] = torch.softmax(aff, dim=0)
    for _ in range(steps):
        new = torch.zeros_like(scores)
        for y in range(h):
            for x in range(w):
                p = 0
                for d in dilations:
                    for dy, dx in OFFSETS:
                        new[:, y, x] += weights[y, x, p] * pixel(scores, y + dy * d, x + dx * d)
                        p += 1
        scores = new
    return scores


@pytest.mark.numerics
def test_matches_pixelwise_transcription():
    g = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, 7, 9, generator=g, dtype=torch.float64)
    scores = torch.randn(2, 4, 7, 9, generator=g, dtype=torch.float64)
    ours = PAMR(steps=3, dilations=(1, 2))(image, scores)
    for i in range(2):
        expected = naive_pamr(image[i], scores[i], 3, (1, 2)).float()
        torch.testing.assert_close(ours[i], expected, rtol=0, atol=1e-5)


def test_refines_towards_image_edges_and_stays_in_range():
    image = torch.zeros(1, 3, 16, 16)
    image[..., 8:] = 1.0                                   # a vertical edge
    g = torch.Generator().manual_seed(1)
    truth = (torch.arange(16) >= 8).float().expand(16, 16)
    scores = torch.stack([1 - truth, truth])[None] + 0.8 * torch.randn(1, 2, 16, 16, generator=g)
    refined = PAMR(steps=10, dilations=(1, 2))(image, scores)
    assert refined.min() >= scores.min() - 1e-6 and refined.max() <= scores.max() + 1e-6  # convex averaging
    wrong_before = (scores.argmax(1) != truth).sum()
    wrong_after = (refined.argmax(1) != truth).sum()
    assert wrong_after < wrong_before and wrong_after == 0


@pytest.mark.numerics
def test_constant_image_averages_the_neighbours_and_chunking_is_exact():
    scores = torch.randn(1, 5, 6, 7, generator=torch.Generator().manual_seed(2))
    flat = torch.full((1, 3, 6, 7), 0.5)
    one = PAMR(steps=1, dilations=(1,))(flat, scores)
    padded = torch.nn.functional.pad(scores, (1, 1, 1, 1), mode="replicate")
    neigh = [padded[..., 1 + dy:1 + dy + 6, 1 + dx:1 + dx + 7] for dy, dx in OFFSETS]
    torch.testing.assert_close(one, torch.stack(neigh).mean(0))
    image = torch.rand(1, 3, 6, 7, generator=torch.Generator().manual_seed(3))
    whole = PAMR(steps=2, dilations=(1, 3))(image, scores)
    chunked = PAMR(steps=2, dilations=(1, 3), chunk_elems=1)(image, scores)   # one score channel at a time
    torch.testing.assert_close(whole, chunked, rtol=0, atol=0)


def test_resizes_scores_and_validates():
    out = PAMR(steps=0)(torch.rand(1, 3, 20, 30), torch.randn(1, 4, 10, 15))
    assert out.shape == (1, 4, 20, 30)
    with pytest.raises(ValueError):
        PAMR(steps=2, dilations=(0,))


def _preprocess(model, image):
    from mmseg.structures import SegDataSample

    sample = SegDataSample()
    sample.set_metainfo(dict(ori_shape=tuple(image.shape[-2:])))
    return model.data_preprocessor(dict(inputs=[image], data_samples=[sample]), False)


def test_segmentor_switch():
    torch.manual_seed(0)
    model = FSASegmentor(name_path="voc20", clip_model="tiny-ViT-16", base_method="naclip", vfm=None, fsa=False,
                         random_weights=True, cache_text=False, templates="single", slide_crop=0, pamr=True,
                         pamr_steps=10, pamr_dilations=(1, 2))
    assert model.model.pamr.steps == 10 and model.model.pamr.dilations == (1, 2)
    image = torch.randint(0, 255, (3, 40, 56), dtype=torch.uint8)
    refined = model.predict(**_preprocess(model, image))[0].seg_logits.data
    model.model.settings = replace(model.model.settings, pamr=False)
    base = model.predict(**_preprocess(model, image))[0].seg_logits.data
    model.model.settings = replace(model.model.settings, pamr=True, pamr_steps=0)
    same = model.predict(**_preprocess(model, image))[0].seg_logits.data
    torch.testing.assert_close(same, base, rtol=0, atol=1e-6)                # the hook itself changes nothing
    assert refined.shape == base.shape == (20, 40, 56)
    assert (refined - base).abs().max() > 1e-4
