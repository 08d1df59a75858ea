"""Modules outside the package that register base methods, proxies, benchmarks or protocols: the ``--import``
option of ``tools/gen_configs.py``, ``tools/list_configs.py`` and ``tools/check_data.py`` imports them before the
tool reads the registries (a config names them in ``custom_imports``)."""
from __future__ import annotations

import importlib
from typing import Iterable, Tuple


def import_extensions(modules: Iterable[str]) -> Tuple[str, ...]:
    """Import each module (it registers what it adds); returns their names. ``ValueError`` (one line) when one
    cannot be imported."""
    names = tuple(m for m in modules if m)
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise ValueError(f"--import {name}: cannot import it ({err}); is its folder on PYTHONPATH?") from None
    return names
