"""Helpers shared by every module that accepts numpy arrays and torch tensors alike."""

from __future__ import annotations

from typing import Any

__all__ = ["concat", "is_torch", "stack", "torch_device", "torch_float_dtype"]


def is_torch(x: Any) -> bool:
    """True for a torch tensor (checked by module name, so numpy-only callers never import torch)."""
    return type(x).__module__.startswith("torch")


def stack(parts: list, axis: int) -> Any:
    """``np.stack`` or ``torch.stack`` along ``axis``, whichever the parts are."""
    if is_torch(parts[0]):
        import torch

        return torch.stack(parts, dim=axis)
    import numpy as np

    return np.stack(parts, axis=axis)


def concat(parts: list, axis: int) -> Any:
    """``np.concatenate`` or ``torch.cat`` along ``axis``, whichever the parts are."""
    if is_torch(parts[0]):
        import torch

        return torch.cat(parts, dim=axis)
    import numpy as np

    return np.concatenate([np.asarray(p) for p in parts], axis=axis)


def torch_device(device: Any) -> Any:
    """``device`` as a ``torch.device``, checked when a network is built rather than at its first call.

    Raises ``ValueError`` naming the valid values for a string torch does not know, for a device
    type the network does not run on, and for a CUDA device this machine does not have.
    """
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {device!r} is not a device torch knows; use 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device {device!r}: the network runs on 'cpu' or 'cuda' (or 'cuda:N')")
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise ValueError(f"device {str(dev)!r} was requested but torch sees no CUDA GPU on this machine; "
                             "use device='cpu'")
        if dev.index is not None and dev.index >= n:
            raise ValueError(f"device {str(dev)!r}: torch sees {n} CUDA GPU(s) on this machine, "
                             f"'cuda:0' to 'cuda:{n - 1}'; use one of those or 'cpu'")
    return dev


def torch_float_dtype(dtype: Any, allowed: tuple) -> Any:
    """``dtype`` if it is one of the torch dtypes ``allowed``, else ``ValueError`` naming them."""
    if not any(dtype is d for d in allowed):
        raise ValueError(f"dtype must be one of {', '.join(map(str, allowed))}; got {dtype!r}")
    return dtype
