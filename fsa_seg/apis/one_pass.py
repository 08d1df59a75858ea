"""Several settings in one pass over the data: which runs can share one, and the variants they become.

Runs whose configs differ only in model settings that act after the backbone (the model class's
``VARIANT_KEYS``: for the CLIP segmentor FSA on/off and its parameters, the base method among those that share
the backbone, ProxyCLIP's beta/gamma, PAMR, the thresholds and the logit scale; for SAM3 the thresholds, the
score recipe and FSA's settings) are evaluated together
(:func:`fsa_seg.apis.evaluate.evaluate_runs`, :func:`~fsa_seg.apis.evaluate.evaluate_variants`): per crop batch
the backbone runs once and each setting its last block and post-processing, and each run's results land where,
and as, its own evaluation writes them.

:func:`pass_variants` gives the variants (model config keys on top of the first run's model) of loaded configs,
or a one-line :class:`~fsa_seg.open_vocab.VariantError` naming what differs. It reads configs only, so the
evaluation and the planners of many evaluations (:mod:`.sweep`, :mod:`.paper_table`) all build on it.
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence

from ..open_vocab import VariantError
from .config import segmentor_class

# Top-level config keys that the runner reads: equal in every run of a pass (model and work_dir may differ).
RUNNER_KEYS = ("test_dataloader", "test_evaluator", "test_cfg", "default_hooks", "custom_hooks",
               "data_preprocessor", "load_from", "env_cfg", "log_processor", "log_level", "visualizer",
               "default_scope", "randomness", "custom_imports", "model_wrapper_cfg", "compile")
# Model config keys that belong to the segmentor, not to its model.
_SEGMENTOR_KEYS = ("type", "data_preprocessor", "init_cfg", "variants")


def _plain(value: Any) -> Any:
    """Config values as plain containers (ConfigDict -> dict; tuples and lists compare equal)."""
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def pass_variants(cfgs: Sequence[Any]) -> List[Dict[str, Any]]:
    """The variants of ``cfgs`` (loaded configs) as model config keys on top of ``cfgs[0].model``: ``[{}, ...]``.

    :class:`VariantError` (one line, naming the key) when they cannot share one pass: a runner key differs
    (dataset, pipeline, evaluator, ...), the model type differs or cannot evaluate variants, or a model key
    that is not a variant key of the model (the window, the backbone, the proxy, the classes, ...) differs.
    """
    first = cfgs[0]
    for cfg in cfgs[1:]:
        for key in RUNNER_KEYS:
            if _plain(cfg.get(key)) != _plain(first.get(key)):
                raise VariantError(f"{key} differs between the runs: they cannot share one pass; use separate runs")
    base = _plain(first.model)
    cls = segmentor_class(base)
    if cls is None or not hasattr(cls, "variant_changes"):
        raise VariantError(f"model type {base.get('type')!r} cannot evaluate several settings in one pass; "
                           f"use separate runs")
    own = {k: v for k, v in base.items() if k not in _SEGMENTOR_KEYS}
    variants = []
    for cfg in cfgs:
        model = _plain(cfg.model)
        for key in _SEGMENTOR_KEYS:
            if model.get(key) != base.get(key):
                raise VariantError(f"model.{key} differs between the runs: they cannot share one pass; "
                                   f"use separate runs")
        for key in sorted(set(own) - set(model)):
            raise VariantError(f"model.{key} is set in one run's config only: the runs cannot share one pass; "
                               f"use separate runs")
        variant = {k: v for k, v in model.items() if k not in _SEGMENTOR_KEYS and (k not in own or v != own[k])}
        cls.variant_changes(own, variant)
        variants.append(variant)
    return variants
