"""Checks that run before an evaluation starts: until they pass nothing is built, read or written.

* :func:`check_class_file` - the model's class-name file against the classes of the dataset it is scored on
  (count, repeated names, the name at each id);
* :func:`check_writable` - a work dir that can be created and written (without creating it).

The config keys, the data root, the value ranges and the weights are checked by their own code
(:mod:`.config`, :func:`fsa_seg.plugin.datasets.check_data_root`, the model's constructor) in the same phase:
:func:`fsa_seg.apis.evaluate.evaluate_runs` builds the model before the runner, which is what writes the work dir.
"""
from __future__ import annotations

import os
import os.path as osp
from typing import Any, Mapping, Optional, Sequence

from ..benchmarks import benchmark_for_dataset_type
from ..class_names import check_class_names, load_class_names, reference_class_names


class ClassNamesError(ValueError):
    """The class-name file does not fit the dataset (one line: what differs and how to fix it)."""


class WorkDirError(ValueError):
    """The work dir cannot be created or written (one line)."""


def dataset_classes(dataset_cfg: Mapping[str, Any]) -> Optional[Sequence[str]]:
    """The class names of a dataset config, in label-id order (``metainfo.classes`` of the config, else the dataset
    class's own); ``None`` when unknown."""
    import fsa_seg.plugin  # noqa: F401  (registers the datasets)
    from mmseg.registry import DATASETS

    metainfo = dataset_cfg.get("metainfo") or {}
    if metainfo.get("classes"):
        return tuple(metainfo["classes"])
    dataset_type = dataset_cfg.get("type")
    cls = DATASETS.get(dataset_type) if isinstance(dataset_type, str) else dataset_type
    classes = (getattr(cls, "METAINFO", None) or {}).get("classes") if cls is not None else None
    return tuple(classes) if classes else None


def check_class_file(model_cfg: Mapping[str, Any], dataset_cfg: Mapping[str, Any], strict: bool = False
                     ) -> Optional[str]:
    """Check the model's ``name_path`` against the dataset's classes before anything runs.

    Raises :class:`ClassNamesError` (one line) when the number of classes differs or a name is on two lines; a line
    that does not name the dataset's class at its id gives the returned warning (the pairs listed), or the error
    with ``strict``. ``None``: nothing to report (or no class file / dataset classes to compare).
    """
    name_path = model_cfg.get("name_path")
    classes = dataset_classes(dataset_cfg)
    if not name_path or not classes:
        return None
    words, query_to_class = load_class_names(name_path)  # a malformed file: its own one-line ValueError
    bench = benchmark_for_dataset_type(dataset_cfg.get("type"))
    metainfo_override = bool((dataset_cfg.get("metainfo") or {}).get("classes"))
    if bench is not None and not metainfo_override and len(classes) == bench.num_classes:
        label, background = bench.column, bench.background
        reference = reference_class_names(bench.class_names, bench.num_classes)
    else:
        label, background, reference = str(dataset_cfg.get("type", "the dataset")), None, None
    found = check_class_names(words, query_to_class, classes, label, background, reference)
    where = f"class-name file {name_path}"
    packaged = f" (the packaged file for {label}: model.name_path={bench.class_names})" if bench else ""
    if found.errors:
        raise ClassNamesError(f"{where} does not fit {label}: {'; '.join(found.errors)}. Label ids follow the "
                              f"line order: give one line per {label} class, in its order{packaged}")
    if not found.mismatches:
        return None
    text = (f"{where}: {len(found.mismatches)} line(s) do not name {label}'s class at their id: "
            f"{found.mismatch_text()}; scores are reported under {label}'s names")
    if strict:
        raise ClassNamesError(f"{text} (--strict){packaged}")
    return f"{text} (--strict makes this an error)"


def check_writable(path: str, what: str = "work dir") -> None:
    """``path`` can be written, or created as a folder, by this process: :class:`WorkDirError` (one line) if not.
    Nothing is created."""
    probe = osp.abspath(path)
    while not osp.exists(probe):
        parent = osp.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not osp.isdir(probe):
        raise WorkDirError(f"{what} '{path}' cannot be created: '{probe}' is a file; choose another with --work-dir")
    if not os.access(probe, os.W_OK | os.X_OK):
        where = "it is" if probe == osp.abspath(path) else f"'{probe}' is"
        raise WorkDirError(f"{what} '{path}' is not writable ({where} read-only for this user); choose another "
                           f"with --work-dir")
