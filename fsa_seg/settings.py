"""Typed settings: the keys and defaults of a settings dataclass, and the deprecated spellings of renamed keys.

A model's head settings (what acts after its backbone: ``OutputSettings`` in :mod:`fsa_seg.open_vocab` and its
subclasses) are a frozen dataclass; its fields are the model's variant keys (:func:`setting_keys`), their
defaults the constructor's (:func:`setting_defaults`), and a variant is ``dataclasses.replace(settings, ...)``.

FSA's two logit scales of its attention isolation (paper Eq. 3) are named the same for every model:
``feedback_scale`` scales the model's own logits (the feedback distribution), ``isolation_scale`` the subtracted
logits of uniform attention. :data:`RENAMED_SCALES` maps their deprecated spellings onto them;
:func:`rename_deprecated` (and the decorator :func:`accepts_renamed`) accept those with a ``DeprecationWarning``
naming the new key. Plain Python, no torch.
"""
from __future__ import annotations

import functools
import os
import sys
import warnings
from dataclasses import MISSING, fields
from typing import Any, Callable, Dict, FrozenSet, Mapping, TypeVar

#: the deprecated spellings of FSA's two isolation scales -> their names
RENAMED_SCALES: Mapping[str, str] = {"base_scale": "feedback_scale", "uniform_scale": "isolation_scale"}

#: the field metadata of a setting that acts only after a crop's scores (thresholds, post-refinement)
AFTER_SCORES = {"after_scores": True}

T = TypeVar("T")


def setting_keys(cls: type) -> FrozenSet[str]:
    """The field names of a settings dataclass."""
    return frozenset(f.name for f in fields(cls))


def after_score_keys(cls: type) -> FrozenSet[str]:
    """The fields of a settings dataclass marked :data:`AFTER_SCORES`."""
    return frozenset(f.name for f in fields(cls) if f.metadata.get("after_scores"))


def setting_defaults(cls: type) -> Dict[str, Any]:
    """The default value of every field of a settings dataclass that has one."""
    out: Dict[str, Any] = {}
    for f in fields(cls):
        if f.default is not MISSING:
            out[f.name] = f.default
        elif f.default_factory is not MISSING:
            out[f.name] = f.default_factory()
    return out


def set_fields(settings: Any, **values: Any) -> None:
    """Set fields of a frozen settings dataclass, in its ``__post_init__`` (their values normalised)."""
    for name, value in values.items():
        object.__setattr__(settings, name, value)


def _outside_stacklevel() -> int:
    """The ``stacklevel`` (for a warning of the function calling this) of the first caller outside the package,
    so that the warning names the user's line."""
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def rename_deprecated(kwargs: Mapping[str, Any], renamed: Mapping[str, str], owner: str,
                      prefix: str = "") -> Dict[str, Any]:
    """``kwargs`` with each deprecated key of ``renamed`` (old -> new) replaced by its new name, with a
    ``DeprecationWarning`` naming the new key (at the first caller outside the package); a ``ValueError`` (one
    line) when a key is given under both names. ``prefix`` is put before the names in the messages (e.g.
    ``model.``)."""
    out = dict(kwargs)
    for old, new in renamed.items():
        if old not in out:
            continue
        if new in out:
            raise ValueError(f"{owner}: both {prefix}{old} and {prefix}{new} are given; {prefix}{old} is the "
                             f"deprecated name of {prefix}{new}: keep {prefix}{new} only")
        warnings.warn(f"{owner}: {prefix}{old} is deprecated, use {prefix}{new}", DeprecationWarning,
                      stacklevel=_outside_stacklevel())
        out[new] = out.pop(old)
    return out


def accepts_renamed(renamed: Mapping[str, str]) -> Callable[[T], T]:
    """Decorator of a function or a class (its ``__init__``): keyword arguments spelled as a deprecated key of
    ``renamed`` are passed under their new name (:func:`rename_deprecated`); the signature shown is the new one."""
    def decorate(target):
        fn = target.__init__ if isinstance(target, type) else target
        owner = target.__qualname__

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            return fn(*args, **rename_deprecated(kwargs, renamed, owner))

        if isinstance(target, type):
            target.__init__ = wrapper
            return target
        return wrapper

    return decorate
