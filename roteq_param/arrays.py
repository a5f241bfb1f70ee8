"""Helpers shared by every module that accepts numpy arrays and torch tensors alike."""

from __future__ import annotations

from typing import Any

__all__ = ["is_torch"]


def is_torch(x: Any) -> bool:
    """True for a torch tensor (checked by module name, so numpy-only callers never import torch)."""
    return type(x).__module__.startswith("torch")
