"""Multi-process evaluation on mmengine's launchers: the backend for the device and what a training-free
model needs from the runner.

Three things in mmengine 0.10.7 stand between ``--launcher pytorch`` and a working run of this package:

- the configs' ``dist_cfg`` names ``nccl``, which only runs on CUDA: on CPU the backend must be ``gloo``;
- ``mmengine.dist.utils._init_dist_pytorch`` calls ``torch.cuda.set_device(LOCAL_RANK)`` before it opens
  the process group, which raises on a machine without CUDA: on CPU the group is opened here first (the
  runner then skips its own ``init_dist``, it checks ``is_distributed()``);
- the runner wraps the model in ``DistributedDataParallel``, which refuses a module with no parameter that
  requires a gradient (the segmentors freeze theirs): ``MMSeparateDistributedDataParallel`` instead moves
  such submodules to the device and wraps nothing (evaluation needs no gradient synchronisation).

A fourth is the end of the run: a process that exits with its gloo group still open can abort in the group's
destructor ("terminate called without an active exception", exit -6) after its work is done, failing the whole
torchrun job. :func:`process_group_scope` closes the group that an evaluation opened.

Pure: imports only the standard library at module level (torch inside the functions).
"""
from __future__ import annotations

import contextlib
import datetime
import os
from typing import Iterator, Optional

# Backends that run without CUDA (torch.distributed): nccl needs CUDA devices.
CPU_BACKENDS = ("gloo", "mpi")
EVAL_MODEL_WRAPPER = "MMSeparateDistributedDataParallel"


def dist_backend(requested: Optional[str] = None, cuda: Optional[bool] = None) -> str:
    """The torch.distributed backend for this device.

    On CUDA: ``requested`` (the config's ``dist_cfg.backend``), ``nccl`` by default. Without CUDA: ``gloo``,
    unless ``requested`` is itself a backend that runs on CPU (``gloo``, ``mpi``). ``cuda`` defaults to
    ``torch.cuda.is_available()``.
    """
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    if cuda:
        return requested or "nccl"
    return requested if requested in CPU_BACKENDS else "gloo"


def setup_distributed(cfg, launcher: str) -> None:
    """Prepare a runner config ``cfg`` (mmengine ``Config`` or dict) for ``launcher`` != ``'none'``.

    Sets ``cfg.env_cfg.dist_cfg.backend`` for the device, makes the model wrapper one that accepts a frozen
    model (unless the config names one), and without CUDA opens the process group from torchrun's
    environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``).
    """
    import torch

    if launcher == "none":
        return
    cuda = torch.cuda.is_available()
    env_cfg = cfg.setdefault("env_cfg", {})
    dist_cfg = dict(env_cfg.get("dist_cfg") or {})
    dist_cfg["backend"] = dist_backend(dist_cfg.get("backend"), cuda)
    env_cfg["dist_cfg"] = dist_cfg
    if cfg.get("model_wrapper_cfg") is None:
        cfg["model_wrapper_cfg"] = dict(type=EVAL_MODEL_WRAPPER)
    if cuda:
        return  # mmengine's launcher binds one GPU per process and opens the group itself
    if launcher != "pytorch":
        raise ValueError(f"--launcher {launcher} needs CUDA GPUs (mmengine's {launcher} launcher binds one GPU "
                         "per process); on CPU run tools/dist_test.sh (torchrun, --launcher pytorch)")
    import torch.distributed as torch_dist

    if not torch_dist.is_initialized():
        kwargs = {k: v for k, v in dist_cfg.items() if k != "backend"}
        if kwargs.get("timeout") is not None:  # seconds in mmengine's dist_cfg, a timedelta for torch
            kwargs["timeout"] = datetime.timedelta(seconds=kwargs["timeout"])
        torch_dist.init_process_group(backend=dist_cfg["backend"], rank=int(os.environ["RANK"]),
                                      world_size=int(os.environ["WORLD_SIZE"]), **kwargs)


@contextlib.contextmanager
def process_group_scope(launcher: str) -> Iterator[None]:
    """Close the process group opened inside this block (by :func:`setup_distributed` or mmengine's runner).

    On success every rank meets at a barrier first, so no rank tears its connections down while another still
    uses them; after an error the group is destroyed without one (the other ranks may never arrive; torchrun
    stops them). A group that was already open when the block began belongs to the caller and stays open.
    """
    if launcher == "none":
        yield
        return
    import torch.distributed as torch_dist

    opened_before = torch_dist.is_available() and torch_dist.is_initialized()
    succeeded = False
    try:
        yield
        succeeded = True
    finally:
        if not opened_before and torch_dist.is_available() and torch_dist.is_initialized():
            if succeeded:
                torch_dist.barrier()
            torch_dist.destroy_process_group()
