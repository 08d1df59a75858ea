"""Loading pretrained weights, and the errors a user sees when they are not there.

Every model keeps its real loading path (open_clip pretrained tags, the timm/HF hub, published URLs cached
by torch, local checkpoint files). What this module adds is the failure mode: offline with nothing cached,
or a checkpoint that does not fit the model, raises :class:`WeightsUnavailableError` with the model, the
file it looked for and how to provide it, instead of a network traceback.
"""
from __future__ import annotations

import os
import socket
from typing import Iterable, Mapping, Optional
from urllib.parse import urlsplit

import torch


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be found, fetched, or do not fit the model."""


#: appended to every missing-weights message: how to check the pipeline without any weights
PIPELINE_CHECK_HINT = ("To check the pipeline without weights: --cfg-options model.random_weights=True (fast: add "
                       "model.clip_model=tiny-ViT-16 model.vfm=tiny-dino; docs/evaluation.md).")


def missing_weights(model: str, looked_for: str, how: str, cause: Optional[BaseException] = None) -> WeightsUnavailableError:
    msg = f"weights for {model} are not available: looked for {looked_for}. {how}"
    if hub_offline():
        msg += " (offline: the weights hub is unreachable)"
    elif cause is not None:
        msg += f" (underlying error: {type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''})"
    return WeightsUnavailableError(f"{msg} {PIPELINE_CHECK_HINT}")


_OFFLINE: Optional[bool] = None


def _hub_address() -> tuple:
    """``(host, port)`` a download from the Hugging Face hub connects to first: the HTTPS proxy when one is set."""
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    url = urlsplit(proxy if proxy else os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    return url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)


def hub_offline(timeout: float = 3.0) -> bool:
    """Whether the weights hub is unreachable, probed once per process (one TCP connection, ``timeout`` s).

    When it is, Hugging Face's offline mode is switched on (``HF_HUB_OFFLINE=1``, read by huggingface_hub,
    transformers, timm and open_clip), so a missing file fails at once from the cache instead of after minutes of
    retries; cached weights still load. ``HF_HUB_OFFLINE=1`` set by the user counts as offline (no probe).
    """
    global _OFFLINE
    if _OFFLINE is None:
        import huggingface_hub.constants as hub_constants

        if hub_constants.HF_HUB_OFFLINE:
            _OFFLINE = True
        else:
            try:
                socket.create_connection(_hub_address(), timeout=timeout).close()
                _OFFLINE = False
            except OSError:
                _OFFLINE = True
                os.environ["HF_HUB_OFFLINE"] = "1"
                hub_constants.HF_HUB_OFFLINE = True  # read at call time; the environment only at import
                print("offline: the weights hub is unreachable; using cached weights only", flush=True)
    return _OFFLINE


def check_file(path: str, model: str, how: str) -> str:
    """Return ``path`` expanded, or raise a clear error when it is not a file."""
    expanded = os.path.expanduser(os.path.expandvars(path))
    if not os.path.isfile(expanded):
        raise missing_weights(model, f"the local file '{path}' (not found)", how)
    return expanded


def load_checkpoint_file(path: str, model: str, how: str) -> Mapping[str, torch.Tensor]:
    """Read a checkpoint file into a state dict (``model`` / ``state_dict`` wrappers are unwrapped)."""
    path = check_file(path, model, how)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt file, pickled objects, wrong format
        raise WeightsUnavailableError(f"could not read the checkpoint '{path}' for {model}: {err}") from err
    for key in ("model", "state_dict", "module"):
        if isinstance(state, Mapping) and key in state and isinstance(state[key], Mapping):
            state = state[key]
    if not isinstance(state, Mapping):
        raise WeightsUnavailableError(f"the checkpoint '{path}' for {model} holds no state dict")
    return state


def load_matching_state_dict(module: torch.nn.Module, state: Mapping[str, torch.Tensor], model: str,
                             source: str, ignore: Iterable[str] = ()) -> None:
    """Load ``state`` strictly into ``module``; a checkpoint of another model gets a readable error."""
    ignore = tuple(ignore)
    own = module.state_dict()
    state = {k: v for k, v in state.items() if not k.startswith(ignore)}
    missing = [k for k in own if k not in state and not k.startswith(ignore)]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or mismatched:
        parts = []
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatches (e.g. {mismatched[0]})")
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
        raise WeightsUnavailableError(
            f"the checkpoint {source} does not match {model}: " + "; ".join(parts)
            + ". Check that the file is the checkpoint of this model.")
    module.load_state_dict(state, strict=False)


def warn_random_weights(what: str) -> None:
    """Say loudly that results from this model are meaningless (pipeline checks only)."""
    banner = "!" * 78
    print(f"\n{banner}\n!! RANDOM WEIGHTS for {what}: predictions are meaningless; use this only to check "
          f"the pipeline.\n{banner}", flush=True)  # once, on stdout with the results it qualifies
