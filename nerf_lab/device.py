"""Choosing the device a run uses."""

from __future__ import annotations

import torch


def resolve_device(device: str) -> torch.device:
    """``"auto"`` → CUDA if available, else CPU; anything else as given.

    Raises:
        ValueError: for a CUDA device on a machine without CUDA.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"trainer.device={device!r}, but CUDA is not available here.")
    return dev
