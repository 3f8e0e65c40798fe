"""Device selection shared by both CLIs."""

from __future__ import annotations

import torch

from pairgen.errors import UserError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' → cuda if available else cpu; 'cuda' without a GPU is a user error, not a crash later."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise UserError(f"--device {device!r} is not a device (auto, cpu, cuda, cuda:N)") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA device is available on this machine")
    return resolved
