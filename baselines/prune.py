"""Global magnitude pruning (Han et al., 2015) and what it saves, as in the paper's Tables 2 and 4.

`prune_globally` masks the smallest-magnitude weights over every convolution and linear layer taken
together (one threshold for the whole network, so layers with many small weights lose more);
retraining then runs with the masks in place, and `make_permanent` folds them into the weights.

Savings are counted two ways, because dense kernels do not skip zeros:
- dense MACs / memory: what a dense runtime executes and stores (pruning changes neither);
- effective MACs: multiply-accumulates whose weight is non-zero (what a sparse kernel would execute);
- sparse memory: non-zero values at the stored precision + a 1-bit-per-weight mask for pruned
  tensors + all other tensors dense (biases, batch-norm statistics).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune


def prunable(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """Every convolution and linear weight (the layers Han et al. prune)."""
    return [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def prune_globally(model: nn.Module, amount: float) -> nn.Module:
    """Mask the `amount` fraction of smallest-|w| weights across all prunable layers (in place)."""
    if not 0.0 <= amount < 1.0:
        raise ValueError(f"prune amount must be in [0, 1), got {amount}")
    if amount > 0:
        prune.global_unstructured(prunable(model), pruning_method=prune.L1Unstructured, amount=amount)
    return model


def make_permanent(model: nn.Module) -> nn.Module:
    """Fold the masks into the weights: a plain state_dict with zeros, loadable by any model of the arch."""
    for module, name in prunable(model):
        if prune.is_pruned(module) and hasattr(module, f"{name}_mask"):
            prune.remove(module, name)
    return model


def sparsity(model: nn.Module) -> float:
    """Fraction of prunable weights that are exactly zero."""
    total = zeros = 0
    for module, name in prunable(model):
        weight = getattr(module, name)
        total += weight.numel()
        zeros += int((weight == 0).sum())
    return zeros / total if total else 0.0


def zero_macs(model: nn.Module, example, detector: bool) -> int:
    """MACs that multiply a zero weight in one forward pass (zero weights x output positions, per layer)."""
    skipped = 0

    def hook(module, _inputs, output):
        nonlocal skipped
        zero_weights = int((module.weight == 0).sum())
        if isinstance(module, nn.Conv2d):
            positions = output.shape[0] * output.shape[-2] * output.shape[-1]
        else:
            positions = output.numel() // output.shape[-1]
        skipped += zero_weights * positions

    handles = [m.register_forward_hook(hook) for m, _ in prunable(model)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model([example[0]] if detector else example)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return skipped


def sparse_memory_mb(model: nn.Module, bytes_per_weight: float = 4.0) -> float:
    """Storage with prunable weights kept sparse (non-zero values at `bytes_per_weight` + a 1-bit mask),
    every other tensor dense as stored (FP32 biases and batch-norm statistics); 10^6 bytes."""
    pruned_ids = {id(getattr(m, n)) for m, n in prunable(model)}
    total = 0.0
    for tensor in list(model.parameters()) + list(model.buffers()):
        if id(tensor) in pruned_ids:
            total += int((tensor != 0).sum()) * bytes_per_weight + tensor.numel() / 8
        else:
            total += tensor.numel() * tensor.element_size()
    return total / 1e6
