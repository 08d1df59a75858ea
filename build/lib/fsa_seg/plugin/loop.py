"""Unreadable images (a truncated JPEG, a broken mask): named in one line, never a DataLoader traceback.

:class:`~fsa_seg.plugin.resume.SkipDoneDataset` returns an :class:`UnreadableImage` for a sample whose loading
fails (in a DataLoader worker, where an exception would become a traceback), :func:`collate_readable` puts them
aside from the batch, and :class:`RecordedTestLoop` (mmengine's ``TestLoop``) meets them in the main process before
the model runs: it stops with :class:`UnreadableImageError` (the per-image records of the batches before are on
disk, so ``--resume`` continues once the file is fixed), or with ``skip_unreadable`` leaves them out, names each in a
warning line and lists them in ``skipped`` (they get no record: a later ``--resume`` evaluates them).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

from mmengine.dataset import pseudo_collate
from mmengine.registry import FUNCTIONS
from mmengine.runner import TestLoop
from mmseg.registry import LOOPS

UNREADABLE_KEY = "fsa_seg_unreadable"


@dataclass
class UnreadableImage:
    """Stands for a sample that could not be loaded: its image path and why (one line)."""

    path: str
    reason: str


class UnreadableImageError(ValueError):
    """An image (or its mask) could not be read; ``path`` names it."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.path = path


def unreadable(path: Any, err: BaseException) -> UnreadableImage:
    text = (str(err).splitlines() or [""])[0].strip()
    return UnreadableImage(str(path), f"{type(err).__name__}: {text}" if text else type(err).__name__)


@FUNCTIONS.register_module(name="fsa_collate_readable")
def collate_readable(data_batch: Sequence[Any], inner: Union[None, dict, Callable] = None) -> Any:
    """``inner`` (the config's collate function, default ``pseudo_collate``) on the readable samples; the
    unreadable ones go to ``batch[UNREADABLE_KEY]`` as ``(path, reason)`` pairs."""
    bad = [s for s in data_batch if isinstance(s, UnreadableImage)]
    good = [s for s in data_batch if not isinstance(s, UnreadableImage)]
    if isinstance(inner, dict):
        inner = dict(inner)
        kind = inner.pop("type")
        fn = FUNCTIONS.get(kind) if isinstance(kind, str) else kind
        batch = fn(good, **inner) if good else dict(inputs=[], data_samples=[])
    else:
        batch = (inner or pseudo_collate)(good) if good else dict(inputs=[], data_samples=[])
    if bad:
        batch[UNREADABLE_KEY] = [(s.path, s.reason) for s in bad]
    return batch


@LOOPS.register_module()
class RecordedTestLoop(TestLoop):
    """mmengine's ``TestLoop`` that meets unreadable images (see the module docstring) before the model does."""

    def __init__(self, runner, dataloader, evaluator, fp16: bool = False, skip_unreadable: bool = False) -> None:
        super().__init__(runner, dataloader, evaluator, fp16)
        self.skip_unreadable = bool(skip_unreadable)
        self.skipped: List[Tuple[str, str]] = []

    def run_iter(self, idx, data_batch) -> None:
        bad = data_batch.pop(UNREADABLE_KEY, None) if isinstance(data_batch, dict) else None
        for path, reason in bad or []:
            if not self.skip_unreadable:
                raise UnreadableImageError(f"cannot read image '{path}' ({reason})", path)
            self.skipped.append((path, reason))
            print(f"warning: skipped unreadable image '{path}' ({reason})", flush=True)
        if isinstance(data_batch, dict) and not data_batch.get("inputs"):
            return  # every image of the batch was unreadable
        super().run_iter(idx, data_batch)

    def run(self) -> dict:
        metrics = super().run()
        from mmengine.dist import all_gather_object, is_distributed

        if is_distributed():
            self.skipped = [item for part in all_gather_object(self.skipped) for item in part]
        return metrics


def skipped_images(runner) -> Optional[List[Tuple[str, str]]]:
    """The images a runner's :class:`RecordedTestLoop` skipped (``None``: another loop)."""
    loop = getattr(runner, "_test_loop", None)
    return list(loop.skipped) if isinstance(loop, RecordedTestLoop) else None
