"""The released protocols' post-processing and window options (each method's protocol exactly):
SCLIP's area threshold, NACLIP's renormalised probabilities and unpadded windows, and the released alias
without a proxy."""
import pytest
import torch
import torch.nn.functional as F

from fsa_seg.clip_model import CLIPSegModel
from fsa_seg.open_vocab import suppress_small_classes
from fsa_seg.plugin import FSAProxySegmentation
from tiny import TINY_CLIP



def sclip_area_threshold(probs: torch.Tensor, area_thd: float) -> torch.Tensor:
    """SCLIP's released post-processing, written out: one-hot of the argmax, areas of the classes >= 1, a class
    survives when its area is larger than area_thd times the non-background predicted area."""
    num_cls = probs.shape[0]
    one_hot = F.one_hot(probs.argmax(0), num_cls).float()          # [H, W, K]
    area = one_hot[:, :, 1:].sum((0, 1), keepdim=True)              # [1, 1, K-1]
    keep = (area > area_thd * area.sum()).float()
    out = probs.clone()
    out[1:] *= keep.transpose(0, -1)                                # [K-1, 1, 1]
    return out


def hand_built(counts):
    """Probabilities ``[K, 10, 10]`` whose argmax covers ``counts[k]`` pixels for class k (row-major runs), with
    a runner-up one step below the winner so a suppressed class hands its pixels to the next best."""
    num = len(counts)
    labels = torch.cat([torch.full((c,), k) for k, c in enumerate(counts)]).view(10, 10)
    probs = torch.full((num, 10, 10), 0.05)
    probs.scatter_(0, labels[None], 0.6)
    probs[0][labels != 0] = 0.3                                     # background is every pixel's runner-up
    return probs, labels


def test_area_threshold_on_a_hand_built_map():
    # class 2 covers 5 of the 45 non-background pixels (11%), class 3 covers 4 (8.9%): with 0.1 only class 3
    # goes. A threshold against all 100 pixels would remove class 2 too; ">=" instead of ">" keeps class 3 at
    # area_thd = 4/45.
    probs, labels = hand_built([55, 36, 5, 4])
    ours = suppress_small_classes(probs, 0.1)
    torch.testing.assert_close(ours, sclip_area_threshold(probs, 0.1))
    expected = labels.clone()
    expected[labels == 3] = 0
    assert torch.equal(ours.argmax(0), expected)
    assert torch.equal(suppress_small_classes(probs, 4 / 45).argmax(0), expected)    # at the boundary: removed
    assert torch.equal(suppress_small_classes(probs, 0.0).argmax(0), labels)        # nothing removed
    assert torch.equal(probs, hand_built([55, 36, 5, 4])[0])                          # the input is untouched


def test_area_threshold_and_renormalisation_in_the_prediction():
    torch.manual_seed(0)
    kwargs = dict(name_path="voc21", vfm=None, base_method="sclip", fsa=False, slide_crop=0, **TINY_CLIP)
    plain = CLIPSegModel(**kwargs)
    with_area = CLIPSegModel(area_thd=0.1, **kwargs)
    renorm = CLIPSegModel(renormalize=True, **kwargs)
    for model in (with_area, renorm):
        model.load_state_dict(plain.state_dict())
        model.text_embeddings = plain.text_embeddings
    scores = torch.randn(plain.num_queries, 12, 16) * 0.05
    base, area, norm = (m.predict_scores(scores) for m in (plain, with_area, renorm))
    torch.testing.assert_close(area.probabilities, sclip_area_threshold(base.probabilities, 0.1))
    assert torch.equal(area.labels, with_area.labels(sclip_area_threshold(base.probabilities, 0.1)))
    # NACLIP: the stored probabilities sum to one over the classes; the labels are those of the max.
    assert (base.probabilities.sum(0) - 1).abs().max() > 1e-3       # the max over synonyms broke the sum
    torch.testing.assert_close(norm.probabilities.sum(0), torch.ones(12, 16))
    torch.testing.assert_close(norm.probabilities, base.probabilities / base.probabilities.sum(0, keepdim=True))
    assert torch.equal(norm.labels, base.labels)


def test_naclip_whole_image_floors_the_patch_grid():
    """NACLIP's released whole-image path: the 16-pixel patch embedding of a 336 x 449 image gives a 21 x 28 grid
    (the last 1 column of pixels is dropped), and the logits are stretched back over the 336 x 449 image."""
    torch.manual_seed(0)
    kwargs = dict(name_path="voc20", vfm=None, base_method="naclip", fsa=False, slide_crop=0, **TINY_CLIP)
    floor = CLIPSegModel(patch_fit="floor", **kwargs)
    pad = CLIPSegModel(patch_fit="pad", **kwargs)
    pad.load_state_dict(floor.state_dict())
    pad.text_embeddings = floor.text_embeddings
    image = torch.randn(3, 336, 449, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        grid_logits = floor.patch_logits(image[None])                 # the released forward_feature
        assert grid_logits.shape[-2:] == (21, 28)
        released = F.interpolate(grid_logits, size=(336, 449), mode="bilinear", align_corners=False)[0]
        ours = floor.image_scores([image])[0]
        padded = pad.image_scores([image])[0]
    torch.testing.assert_close(ours, released, rtol=0, atol=1e-5)
    assert (padded - released).abs().max() > 1e-3                    # zero padding to 22 x 29 patches differs
    with pytest.raises(ValueError, match="patch_fit"):
        CLIPSegModel(patch_fit="crop", **kwargs)


def test_released_alias_without_a_proxy_ignores_fsa():
    with pytest.warns(UserWarning, match="ignores FSA"):
        segmentor = FSAProxySegmentation(clip_type=None, model_type="tiny-ViT-16", vfm_model=None, name_path="voc20",
                                         FSA=True, random_weights=True, cache_text=False, templates="single")
    assert segmentor.model.base_method == "vanilla" and segmentor.model.fsa is None
    # ours keeps FSA on vanilla CLIP when asked
    model = CLIPSegModel(name_path="voc20", base_method="vanilla", vfm=None, fsa=True, **TINY_CLIP)
    assert model.fsa is not None
