"""The one device resolver of both packages."""

from __future__ import annotations

import os

import torch

from pairgen.core.errors import UserError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' → cuda if available else cpu; 'cuda' without a GPU is a user error, not a crash later.

    Under a multi-process launch (torchrun: WORLD_SIZE > 1), a bare 'cuda' (or 'auto' on a GPU machine) means this
    process's GPU, cuda:LOCAL_RANK; an explicit index or a torch.device is kept.
    """
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise UserError(f"--device {device!r} is not a device (auto, cpu, cuda, cuda:N)") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA device is available on this machine")
    if resolved.type == "cuda" and resolved.index is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        local = int(os.environ.get("LOCAL_RANK", int(os.environ.get("RANK", 0)) % torch.cuda.device_count()))
        return torch.device("cuda", local)
    return resolved
