"""What the SAM3 benchmark times (``tools/benchmark.py --sam3``): one crop at SAM3's input size (1008 x 1008 at full
size), ``C`` prompts, random weights (``Sam3Config()``: SAM3's full architecture, 840M parameters; ``--sam3 tiny``
for the tiny test config), the plain-torch :class:`~fsa_seg.sam3.model.SAM3SegModel` built from a config's keys.

Parts:

* ``sam3_base``  per-crop forward without FSA (``crop_logits``: backbone and geometry token, every prompt
                 through the encoder and the heads, score logits at mask resolution).
* ``sam3_fsa``   the same with FSA (``variant`` on top of the config), ``K`` prompts judged present: the
                 presence threshold is set between the K-th and (K+1)-th presence probability of the crop (a
                 probe pass at set-up; random weights decide which prompts those are).
* ``sam3_step``  FSA alone after the first pass (``fsa_pass``: ``A_fb``, the adapted pass of the K present
                 prompts, isolation's uniform pass if any). Its cost depends only on the present prompts, so it
                 is measured on a model with the K prompts alone, all present; ``sam3_step / sam3_base`` is what
                 FSA adds to the crop forward.

FSA variants (:data:`SAM3_VARIANTS`) are overrides of the config's model keys; ``config`` keeps the config's own.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Dict, Mapping, Tuple

SAM3_PARTS = ("sam3_base", "sam3_fsa", "sam3_step")
SAM3_VARIANTS: Dict[str, Dict[str, Any]] = {
    "config": {},
    "encoder_output": dict(fsa_mode="attention", fsa_placement="encoder_output"),
    "last_layer": dict(fsa_mode="attention", fsa_placement="last_layer"),
    "last_2": dict(fsa_mode="attention", fsa_placement="last_k", fsa_layers=2),
    "mean_isolation": dict(isolation="mean", isolation_scale=1.0),
    "three_strategies": dict(fsa_strategies="ensemble_results"),
    "three_strategy_maps": dict(fsa_strategies="ensemble"),
    "output": dict(fsa_mode="output"),
}
SAM3_SIZES = ("full", "tiny")


def sam3_overrides(size: str) -> Dict[str, Any]:
    """Model keys of a SAM3 benchmark run: random weights at ``size`` (``full``: ``Sam3Config()``)."""
    if size not in SAM3_SIZES:
        raise ValueError(f"SAM3 size must be one of {SAM3_SIZES}, got '{size}'")
    return dict(random_weights=True, sam3_config=dict() if size == "full" else None, slide_crop=0)


def build_sam3_model(model_cfg: Mapping[str, Any], overrides: Mapping[str, Any]):
    """``SAM3SegModel`` of a config's model keys with ``overrides`` (``type`` ignored), with seeded, spread-out random
    weights (``loading.randomize_parameters_``): with transformers' init every prompt gets the same presence
    probability to the last bit, so no threshold could select K of them."""
    import torch

    from ..sam3 import SAM3SegModel
    from ..sam3.loading import randomize_parameters_

    kwargs = {k: v for k, v in dict(model_cfg).items() if k != "type"}
    kwargs.update(overrides)
    torch.manual_seed(0)
    model = SAM3SegModel(**kwargs).eval()
    randomize_parameters_(model.sam3, seed=0)
    model.encode_queries()
    return model


def threshold_for(presence_logits, present: int) -> float:
    """A presence threshold that ``present`` of the prompts reach: between the ``present``-th and the next
    largest presence probability (0 when every prompt counts)."""
    probs = presence_logits.float().sigmoid().sort(descending=True).values
    if present >= probs.numel():
        return 0.0
    if present < 1:
        return 1.0
    return float((probs[present - 1] + probs[present]) / 2)


def setup(spec: Dict, model_cfg: Mapping[str, Any], class_file: Callable[[str, int], str],
          synced: Callable) -> Tuple[Callable[[], object], Dict, object]:
    """``(fn, meta, device)`` of one SAM3 measurement ``spec`` (part, c, variant, present, sam3_size)."""
    import torch

    from ..sam3 import decode

    part = spec["part"]
    if part not in SAM3_PARTS:
        raise ValueError(f"unknown SAM3 part '{part}'; choose from {SAM3_PARTS}")
    variant = spec.get("variant") or "config"
    if variant not in SAM3_VARIANTS:
        raise ValueError(f"unknown SAM3 variant '{variant}'; choose from {list(SAM3_VARIANTS)}")
    overrides = dict(spec.get("overrides") or {})
    overrides.update(sam3_overrides(spec.get("sam3_size", "full")))
    overrides["fsa"] = part != "sam3_base"
    if overrides["fsa"]:
        overrides.update(SAM3_VARIANTS[variant])
    present = int(spec.get("present") or spec["c"])
    prompts = present if part == "sam3_step" else int(spec["c"])
    overrides["name_path"] = class_file(spec["work_dir"], prompts)
    if part == "sam3_step":
        overrides["presence_thd"] = 0.0            # the K prompts of this model are the present ones
    model = build_sam3_model(model_cfg, overrides)
    device, dtype = model.run_device, model.run_dtype
    size = model.image_size
    crop = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device, dtype)
    meta: Dict = dict(variant=variant if overrides["fsa"] else None, prompts=prompts, crop=size,
                      dtype=str(dtype).replace("torch.", ""), sam3_size=spec.get("sam3_size", "full"),
                      params_m=round(sum(p.numel() for p in model.sam3.parameters()) / 1e6, 1))
    with torch.no_grad():
        vision = decode.encode_vision(model.sam3, crop)
        meta["n"] = vision.token_grid[0] * vision.token_grid[1]
        if part == "sam3_base":
            del vision
        elif part == "sam3_fsa":
            probe = model.first_pass(vision, 0)
            del vision
            thd = threshold_for(probe.presence_logits, present)
            model.settings = replace(model.settings, presence_thd=thd)
            meta.update(presence_thd=thd, present=int((probe.presence_logits.sigmoid() >= thd).sum()))
            del probe
        else:
            first = model.first_pass(vision, 0)
            meta["present"] = int(first.present.numel())
    meta["fsa_options"] = ({k: getattr(model, k) for k in ("fsa_mode", "fsa_batch_size")}
                           | dict(placement=model.placement.name, layers=model.placement.layers,
                                  isolation=model.feedback.isolation, strategies=model.feedback.strategies)
                           if overrides["fsa"] else None)

    if part == "sam3_step":
        return synced(lambda: model.fsa_pass(vision, 0, first), device), meta, device
    return synced(lambda: model.crop_logits(crop), device), meta, device
