"""Weights and training checkpoints in safetensors, written atomically.

A checkpoint is one file: the model's tensors under "model.", each optimizer's state under
"optim.<name>.<param>.<key>", and a JSON header (stage, step, config, optimizer hyper-parameters)
in the safetensors metadata. One file renamed into place means a kill at any moment leaves
either the previous checkpoint or the new one, never a mix.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import EngineError
from ..files import atomic_write_tensors


def save_weights(path: Path, tensors: dict[str, torch.Tensor], header: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_tensors(path, {k: v.detach().cpu().contiguous().numpy() for k, v in tensors.items()},
                         {"header": json.dumps(header)})


def load_weights(path: Path, device="cpu") -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors import safe_open
    if not path.is_file():
        raise EngineError(f"{path}: missing", "train the subject first (python -m engine train SUBJECT)", path=str(path))
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            header = json.loads((f.metadata() or {}).get("header", "{}"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # a truncated or foreign file
        raise EngineError(f"{path}: unreadable weights ({exc})", "train the subject again", path=str(path)) from exc
    return tensors, header


def save_checkpoint(path: Path, model: torch.nn.Module, optimizers: dict, header: dict) -> None:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    groups = {}
    for name, optimizer in optimizers.items():
        state = optimizer.state_dict()
        groups[name] = state["param_groups"]
        for param, values in state["state"].items():
            for key, value in values.items():
                tensors[f"optim.{name}.{param}.{key}"] = torch.as_tensor(value)
    save_weights(path, tensors, {**header, "optimizer_groups": groups})


def load_checkpoint(path: Path, model: torch.nn.Module, optimizers: dict, device) -> dict:
    tensors, header = load_weights(path, device)
    model.load_weights({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    for name, optimizer in optimizers.items():
        state: dict = {}
        prefix = f"optim.{name}."
        for key, value in tensors.items():
            if key.startswith(prefix):
                param, field = key[len(prefix):].split(".", 1)
                state.setdefault(int(param), {})[field] = value.cpu() if field == "step" else value
        optimizer.load_state_dict({"state": state, "param_groups": header["optimizer_groups"][name]})
    return header
