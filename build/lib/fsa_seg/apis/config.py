"""Loading a config with overrides, and checking the overrides (a typo would otherwise silently do nothing)."""
from __future__ import annotations

import difflib
import os.path as osp
from typing import Any, List, Mapping, Optional, Set

from mmengine.config import Config


class ConfigKeyError(KeyError):
    """An override names a key the config or the model does not have; ``args[0]`` is the one-line message."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def default_work_dir(config: str) -> str:
    return osp.join("work_dirs", osp.splitext(osp.basename(config))[0])


def load_config(path: str, options: Optional[Mapping[str, Any]] = None, work_dir: Optional[str] = None) -> Config:
    """``Config.fromfile(path)`` with ``options`` merged (``--cfg-options`` style keys) and ``work_dir`` set
    (default ``work_dirs/<config name>``); a missing file is a one-line ``FileNotFoundError``."""
    if not osp.isfile(path):
        raise FileNotFoundError(f"config file '{path}' not found (see configs/ or python tools/list_configs.py)")
    cfg = Config.fromfile(path)
    if options:
        cfg.merge_from_dict(dict(options))
    cfg.work_dir = work_dir or cfg.get("work_dir") or default_work_dir(path)
    return cfg


def segmentor_class(model_cfg: Mapping[str, Any]):
    """The registered segmentor class of a model config (``None`` if unknown)."""
    import fsa_seg.plugin  # noqa: F401  (registers the segmentors)
    from mmseg.registry import MODELS

    model_type = model_cfg.get("type")
    return MODELS.get(model_type) if isinstance(model_type, str) else model_type


def model_option_names(cfg: Config) -> Set[str]:
    """Keyword arguments the config's model accepts (``type`` included); empty when unknown."""
    cls = segmentor_class(cfg.model)
    if cls is None:
        return set()
    if hasattr(cls, "option_names"):
        return set(cls.option_names())
    from ..plugin.segmentors import init_arguments

    return init_arguments(cls) | {"type"}


def check_options(cfg: Config, options: Mapping[str, Any], flag: str = "--cfg-options") -> None:
    """Reject ``model.X`` overrides that the model does not accept (``ConfigKeyError``, one line, with the
    closest known option)."""
    accepted = model_option_names(cfg)
    if not accepted:
        return
    model_type = cfg.model.get("type")
    for key in options:
        parts = key.split(".")
        if parts[0] == "model" and len(parts) >= 2 and parts[1] not in accepted:
            close = difflib.get_close_matches(parts[1], sorted(accepted), n=1)
            hint = f"did you mean 'model.{close[0]}'? " if close else ""
            raise ConfigKeyError(f"{flag} {key}: {model_type} has no option '{parts[1]}'; {hint}"
                                 f"known options: {sorted(accepted)}")


_MISSING = object()


def _node(node: Any, key: str) -> Any:
    """The value at the dotted ``key`` (list items by index), or ``_MISSING``."""
    for part in key.split("."):
        if isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return _MISSING
    return node


def check_config_keys(cfg: Config, keys: List[str], config: str, flag: str = "--grid") -> None:
    """Each key must exist: ``model.*`` keys as model options (deeper levels are the model's to check),
    other keys in the config itself. ``ConfigKeyError`` names the closest key."""
    tree = cfg.to_dict()
    for key in keys:
        parts = key.split(".")
        if parts[0] == "model" and len(parts) >= 2:
            check_options(cfg, {key: None}, flag=flag)
        elif _node(tree, key) is _MISSING:
            parent = key.rsplit(".", 1)[0] if "." in key else ""
            siblings: List[str] = []
            if parent:
                node = _node(tree, parent)
                if isinstance(node, dict):
                    siblings = [f"{parent}.{k}" for k in node]
            else:
                siblings = list(tree)
            close = difflib.get_close_matches(key, siblings, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigKeyError(f"{flag} {key}: {osp.basename(config)} has no key '{key}'{hint}")
