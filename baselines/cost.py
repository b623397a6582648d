"""Cost figures as in the paper's Table 1: MACs at the input size used, parameter memory, CPU latency."""
from __future__ import annotations

import statistics
import time

import torch
from torch import nn


def count_macs(model: nn.Module, example: torch.Tensor, detector: bool) -> int:
    """Multiply-accumulates of one forward pass (convolutions and matrix products, via FlopCounterMode;
    FLOPs = 2 x MACs). For detectors: eval mode, whatever proposals the untrained head keeps."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model([example[0]] if detector else example)
    model.train(was_training)
    return counter.get_total_flops() // 2


def parameter_memory_mb(model: nn.Module) -> float:
    """Bytes of parameters and buffers as stored (dtype-aware), in MB (10^6 bytes)."""
    total = sum(t.numel() * t.element_size() for t in model.state_dict().values() if isinstance(t, torch.Tensor))
    return total / 1e6


def cpu_latency_ms(model: nn.Module, example: torch.Tensor, detector: bool, runs: int = 20, warmup: int = 3) -> float:
    """Median wall time of one frame (batch of 1) on the CPU, in milliseconds."""
    model = model.eval()
    inputs = [example[0]] if detector else example
    times = []
    with torch.inference_mode():
        for k in range(warmup + runs):
            started = time.perf_counter()
            model(inputs)
            if k >= warmup:
                times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def cost_figures(model: nn.Module, height: int, width: int, detector: bool, latency_runs: int = 20) -> dict:
    example = torch.rand(1, 1, height, width)
    model = model.to("cpu")
    macs = count_macs(model, example, detector)
    return {
        "input": f"1x{height}x{width} (grey)",
        "macs_g": round(macs / 1e9, 4),
        "flops_g": round(2 * macs / 1e9, 4),
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 4),
        "memory_mb": round(parameter_memory_mb(model), 3),
        "cpu_latency_ms": round(cpu_latency_ms(model, example, detector, latency_runs), 2),
        "cpu_threads": torch.get_num_threads(),
    }
