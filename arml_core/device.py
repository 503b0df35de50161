"""Device selection shared by every torch code path.

``device='auto'`` picks CUDA when it is present; ``'cuda'`` without CUDA is an
error, never a silent fall-back to the CPU.
"""
from __future__ import annotations

import torch

VALID_DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Return the torch device for ``device`` ('auto', 'cpu', 'cuda' or 'cuda:N')."""
    if isinstance(device, torch.device):
        dev = device
    else:
        if not isinstance(device, str):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
        name = device.strip().lower()
        if name == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if name != "cpu" and not name.startswith("cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
        dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device={str(dev)!r} was requested but CUDA is not available on this machine; "
            "use device='auto' or 'cpu'"
        )
    return dev


def device_label(device: str | torch.device = "auto") -> str:
    """A human-readable name of the device in use ('CPU' or the CUDA device name)."""
    dev = resolve_device(device)
    if dev.type == "cuda":
        return f"CUDA: {torch.cuda.get_device_name(dev)}"
    return "CPU"
