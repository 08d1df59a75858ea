"""FLOPs of one call, counted by torch's ``FlopCounterMode`` (matrix products, convolutions, attention).

torch's counter has formulas for the CUDA attention kernels but not for CPU's fused one
(``aten._scaled_dot_product_flash_attention_for_cpu``, what SDPA runs on CPU): without one an attention call on CPU
counts 0. It is given the same formula as the others here (``4 B h N_q N_k d``, the two matrix products), so CPU
and CUDA runs count alike. Element-wise work (softmax, norms, activations) is not counted, as in torch's counter.
"""
from __future__ import annotations

from typing import Callable, Dict, Tuple


def _cpu_flash_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def custom_formulas() -> Dict:
    """Formulas added to torch's registry (op packet -> formula on shapes)."""
    import torch

    ops = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    return {} if ops is None else {ops: _cpu_flash_attention_flops}


def count_flops(fn: Callable[[], object]) -> Tuple[object, int]:
    """``(fn(), FLOPs)`` of one call (multiply-adds count 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False, custom_mapping=custom_formulas()) as counter:
        out = fn()
    return out, int(counter.get_total_flops())
