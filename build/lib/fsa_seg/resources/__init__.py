"""Files that ship inside the package, found relative to it (never through a source checkout).

* ``CONFIG_DIR``: the configs (``fsa_seg/.mim/configs``, as mmseg ships its own). In a source checkout it
  is a link to the top-level ``configs/``; a built wheel holds a copy.
* ``CLASS_NAME_DIR``: the class-name files that ``name_path='voc21'`` style names resolve to.
* ``MODEL_CONFIG_DIR``: open_clip model configs this package adds (the tiny ViT of the tests).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Union

PACKAGE_DIR = Path(__file__).resolve().parents[1]
CONFIG_DIR = (PACKAGE_DIR / ".mim" / "configs").resolve()
CLASS_NAME_DIR = Path(__file__).resolve().parent / "class_names"
MODEL_CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"


def config_path(relative: Union[str, os.PathLike]) -> Path:
    """A packaged config by its path under ``configs/`` (``'fsa_proxy_sam_voc21.py'``; a leading
    ``configs/`` is accepted)."""
    rel = Path(relative)
    if rel.parts and rel.parts[0] == "configs":
        rel = Path(*rel.parts[1:])
    return CONFIG_DIR / rel


def shown_path(path: Union[str, os.PathLike]) -> str:
    """How a config path is printed: ``configs/...`` for a packaged config, the path as given otherwise."""
    try:
        return str(Path("configs") / Path(os.path.realpath(path)).relative_to(CONFIG_DIR))
    except ValueError:
        return str(path)
