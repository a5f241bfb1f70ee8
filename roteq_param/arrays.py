"""Helpers shared by every module that accepts numpy arrays and torch tensors alike."""

from __future__ import annotations

from typing import Any

__all__ = ["concat", "is_torch", "stack"]


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
