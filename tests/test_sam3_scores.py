"""SAM3 score composition on hand-built logits (the SegEarth-OV-3 recipe, thresholds, top-k, the earlier
sources), its logit output, our SAM3 class files, and bf16 / fp16 against fp32 on a tiny random SAM3."""
from __future__ import annotations

import math
import re

import pytest
import torch
from torch.nn.functional import logsigmoid

from fsa_seg.class_names import CLASS_NAME_DIR, parse_class_names
from fsa_seg.sam3 import decode, scores
from fsa_seg.sam3.decode import HeadOutputs
from fsa_seg.sam3.loading import build_sam3, build_tokenizer, randomize_parameters_
from fsa_seg.sam3.scores import ScoreRecipe

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.numerics]


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def hand_built() -> HeadOutputs:
    """Two prompts, three instances, 1 x 3 pixels, in fp64 for exact comparisons.

    Prompt 0 (presence 0.8): instance scores 0.9, 0.6, 0.95 -> score x presence 0.72, 0.48 (below 0.5: dropped
    although its score alone passes; it would win pixel 2), 0.76. Prompt 1 (presence 0.3): every score x presence
    is below 0.5, no instance is kept.
    """
    presence = torch.tensor([[logit(0.8)], [logit(0.3)]], dtype=torch.float64)
    pred_logits = torch.tensor([[logit(0.9), logit(0.6), logit(0.95)],
                                [logit(0.99), logit(0.2), logit(0.1)]], dtype=torch.float64)
    mask_p = torch.tensor([[[0.95, 0.10, 0.05], [0.99, 0.99, 0.99], [0.20, 0.90, 0.10]],
                           [[0.90, 0.90, 0.90], [0.10, 0.10, 0.10], [0.50, 0.50, 0.50]]], dtype=torch.float64)
    sem_p = torch.tensor([[0.30, 0.30, 0.30], [0.40, 0.05, 0.60]], dtype=torch.float64)
    return HeadOutputs(pred_masks=torch.logit(mask_p)[:, :, None, :], pred_logits=pred_logits,
                       presence_logits=presence, semantic_seg=torch.logit(sem_p)[:, None, None, :])


def transcription(out: HeadOutputs, thd=0.5, top_k=0, instance_presence=True, presence_weighting=True,
                  source="both", reduce="max", weighted=True, criterion_presence=True) -> torch.Tensor:
    """The recipe in probability space, pixel by pixel, as the module docstring states it."""
    pres = out.presence_logits.sigmoid()[:, 0]
    score = out.pred_logits.sigmoid()
    masks = out.pred_masks.sigmoid()[:, :, 0]
    sem = out.semantic_seg.sigmoid()[:, 0, 0]
    result = torch.zeros_like(sem)
    for b in range(sem.shape[0]):
        crit = score[b] * pres[b] if criterion_presence else score[b]
        order = [m for m in sorted(range(score.shape[1]), key=lambda m: -crit[m]) if crit[m] >= thd]
        if top_k:
            order = order[:top_k]
        for x in range(sem.shape[1]):
            weight = [score[b, m] * pres[b] if instance_presence else score[b, m] for m in order]
            weights = [masks[b, m, x] * (w if weighted else 1.0) for m, w in zip(order, weight)]
            inst = max(weights) if weights else 0.0
            if source == "semantic":
                p = sem[b, x]
            elif source == "instances":
                p = inst
            elif reduce == "max":
                p = max(sem[b, x], inst)
            else:
                p = (sem[b, x] + inst) / 2
            result[b, x] = p * pres[b] if presence_weighting else p
    return result[:, None, :]


def test_default_recipe_is_segearth_ov3_on_hand_built_logits():
    out = hand_built()
    got = scores.probabilities(out)
    torch.testing.assert_close(got, transcription(out), rtol=1e-12, atol=1e-12)
    # worked by hand for prompt 0, pixel 0: max(0.30, 0.95 x 0.72, 0.20 x 0.76) x 0.8 = 0.684 x 0.8
    assert got[0, 0, 0].item() == pytest.approx(0.95 * 0.72 * 0.8)
    # prompt 1 keeps no instance: only the semantic map
    torch.testing.assert_close(got[1, 0], torch.tensor([0.40, 0.05, 0.60], dtype=torch.float64) * 0.3)


@pytest.mark.parametrize("variant", [
    dict(thd=0.5, top_k=1), dict(thd=0.5, top_k=2), dict(thd=0.0), dict(thd=0.7),
    dict(instance_presence=False), dict(presence_weighting=False), dict(reduce="mean"),
    dict(source="instances"), dict(source="semantic"),
])
def test_recipe_options_match_the_transcription(variant):
    out = hand_built()
    recipe = ScoreRecipe(instance_thd=variant.get("thd", 0.5), top_k=variant.get("top_k", 0),
                         instance_presence=variant.get("instance_presence", True),
                         presence_weighting=variant.get("presence_weighting", True),
                         source=variant.get("source", "both"), reduce=variant.get("reduce", "max"))
    kwargs = dict(variant)
    kwargs.setdefault("thd", 0.5)
    torch.testing.assert_close(scores.probabilities(out, recipe), transcription(out, **kwargs),
                               rtol=1e-12, atol=1e-12)


def test_each_factor_matters_on_the_hand_built_case():
    # the case tells apart: no instance-score weighting, no presence in the instance weight, no final presence
    # weighting, a threshold on the score alone
    out = hand_built()
    default = transcription(out)
    for mutation in (dict(weighted=False), dict(instance_presence=False), dict(presence_weighting=False),
                     dict(criterion_presence=False)):
        assert (transcription(out, **mutation) - default).abs().max() > 0.05, mutation


def test_legacy_sources_are_the_earlier_formulas():
    out = hand_built()
    sem = out.semantic_seg[:, 0].sigmoid()
    inst = (out.pred_masks.sigmoid() * out.pred_logits.sigmoid()[:, :, None, None]).amax(dim=1)
    pres = out.presence_logits.sigmoid()[:, :, None]
    expected = {"semantic": sem, "instances": inst, ("both", "mean"): (sem + inst) / 2,
                ("both", "max"): torch.maximum(sem, inst)}
    for key, ref in expected.items():
        source, reduce = key if isinstance(key, tuple) else (key, "mean")
        torch.testing.assert_close(scores.probabilities(out, ScoreRecipe.legacy(source, reduce)), ref * pres,
                                   rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(scores.probabilities(out, ScoreRecipe.legacy(source, reduce, False)), ref,
                                   rtol=1e-12, atol=1e-12)


def test_score_logits_are_the_logit_of_the_probability_and_keep_order():
    out = hand_built()
    z = scores.score_logits(out)
    torch.testing.assert_close(z.sigmoid(), scores.probabilities(out), rtol=1e-12, atol=1e-12)
    # far tails stay finite and ordered (probabilities would underflow to 0 and tie)
    tail = HeadOutputs(pred_masks=torch.zeros(2, 1, 1, 1), pred_logits=torch.full((2, 1), -20.0),
                       presence_logits=torch.tensor([[-40.0], [-45.0]]),
                       semantic_seg=torch.tensor([[[[-30.0]]], [[[-30.0]]]]))
    z = scores.score_logits(tail, ScoreRecipe(source="semantic"))
    assert torch.isfinite(z).all() and z[0] > z[1]
    assert z[0].item() == pytest.approx(-70.0, abs=1e-4)
    assert scores.probabilities(tail, ScoreRecipe(source="semantic"))[1].item() < 1e-30


def test_top_k_keeps_the_best_instances_by_score_times_presence():
    out = hand_built()
    log_p = scores.log_scores(out, ScoreRecipe(source="instances", top_k=1, presence_weighting=False))
    # prompt 0: best kept instance is #2 (0.76), its mask x 0.76
    torch.testing.assert_close(log_p[0, 0], logsigmoid(out.pred_masks[0, 2, 0]) + math.log(0.95 * 0.8),
                               rtol=1e-12, atol=1e-12)
    assert torch.isinf(log_p[1]).all() and (log_p[1] < 0).all()   # none kept


def test_bad_recipes_are_rejected():
    for bad in (dict(source="boxes"), dict(reduce="sum"), dict(instance_thd=1.5), dict(top_k=-1)):
        with pytest.raises(ValueError):
            ScoreRecipe(**bad)


# -- SAM3 class files ----------------------------------------------------------------------------------------
BENCHMARKS = ("voc21", "voc20", "context60", "context59", "coco_object", "coco_stuff", "cityscapes", "ade20k",
              "ade847", "context459")
WITH_BACKGROUND = ("voc21", "context60", "coco_object")


@pytest.mark.parametrize("benchmark", BENCHMARKS)
def test_sam3_class_files_have_unique_prompts(benchmark):
    words, classes = parse_class_names((CLASS_NAME_DIR / f"sam3_{benchmark}.txt").read_text(), benchmark)
    _, reference_classes = parse_class_names((CLASS_NAME_DIR / f"{benchmark}.txt").read_text(), benchmark)
    assert max(classes) == max(reference_classes)              # same classes, same label order
    repeated = sorted({w for w in words if words.count(w) > 1})
    assert not repeated, f"prompts on more than one line (or twice on one): {repeated}"
    assert all(re.fullmatch(r"[a-z][a-z ]*[a-z]", w) for w in words)
    if benchmark in WITH_BACKGROUND:
        assert [w for w, c in zip(words, classes) if c == 0] == ["background"]
    else:
        assert "background" not in words


def test_coco_object_background_no_longer_hides_classes():
    words, classes = parse_class_names((CLASS_NAME_DIR / "sam3_coco_object.txt").read_text())
    assert classes[words.index("bed")] != 0 and "desk" not in words


# -- precision -------------------------------------------------------------------------------------------------
RECIPE = ScoreRecipe(instance_thd=0.0)  # the instances take part (none passes 0.5 on these random weights)


@pytest.fixture(scope="module")
def fp32_run():
    # spread-out random weights: with transformers' init a tiny SAM3's maps agree within 1e-4 and labels are ties
    model = randomize_parameters_(build_sam3(random_weights=True), seed=0)
    ids, mask = build_tokenizer(None, True)(["cat", "a dog", "sky", "road", "person", "tree"])
    pixels = torch.rand(1, 3, 112, 112, generator=torch.Generator().manual_seed(3)) * 2 - 1
    return model, pixels, ids, mask, scores.probabilities(decode.forward_prompts(model, pixels, ids, mask), RECIPE)


@pytest.mark.parametrize("dtype, max_diff, min_agreement", [(torch.bfloat16, 0.02, 0.95),
                                                           (torch.float16, 0.004, 0.99)])
def test_low_precision_agrees_with_fp32(fp32_run, dtype, max_diff, min_agreement):
    # measured: bf16 max diff 5.4e-3, labels 98.5 %; fp16 7.9e-4, 99.8 % (every pixel whose fp32 top-2 margin
    # exceeds twice the max diff keeps its label)
    model, pixels, ids, mask, ref = fp32_run
    low = build_sam3(random_weights=True)
    low.load_state_dict(model.state_dict())
    low = low.to(dtype)
    probs = scores.probabilities(decode.forward_prompts(low, pixels.to(dtype), ids, mask), RECIPE)
    assert probs.dtype == torch.float32
    diff = (probs - ref).abs().max().item()
    same = probs.argmax(dim=0) == ref.argmax(dim=0)
    top2 = ref.topk(2, dim=0).values
    confident = (top2[0] - top2[1]) > 2 * diff
    print(f"{dtype}: max prob diff {diff:.2e}, label agreement {same.float().mean():.4f}, "
          f"{confident.float().mean():.3f} of pixels confident")
    assert diff < max_diff and same.float().mean() >= min_agreement
    assert same[confident].all() and confident.float().mean() > 0.3
