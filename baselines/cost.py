"""Cost figures as in the paper's Table 1: MACs at the input size used (and at the paper's 224x224x3
convention), parameter memory, CPU latency with its spread and the machine's load."""
from __future__ import annotations

import copy
import os
import statistics
import sys
import time

import torch
from torch import nn

# Table 1's "3.67G Flops" for ResNet34 is its multiply-accumulates at 224x224 with 3 input channels
# (see paper.FOOTNOTES["flops"]); this label names that convention wherever we print it.
PAPER_MACS_LABEL = "MACs @224×224×3 (paper convention)"
PAPER_INPUT = (3, 224, 224)


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


def macs_at_paper_convention(model: nn.Module, detector: bool) -> int:
    """MACs at 224x224 with 3 input channels, the convention of the paper's FLOPs column, so our
    models can be compared like for like with Tables 1, 2 and 4.

    Our choice of method (the paper only prints the figure): our models take one grey channel, so we
    count them at 1x224x224 and add the MACs the first convolution would spend on two more input
    channels (output elements x kernel area x 2); everything after the first layer is unchanged by
    the channel count. Detectors are counted on a copy whose resize transform is set to 224x224.
    """
    model = copy.deepcopy(model)
    if detector:
        model.transform.min_size, model.transform.max_size = (PAPER_INPUT[1],), PAPER_INPUT[2]
    first: list[tuple[nn.Conv2d, int]] = []

    def record(conv: nn.Conv2d, _inputs, output: torch.Tensor) -> None:
        if not first:
            first.append((conv, output[0].numel()))  # one image's output elements

    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        # a private generator: counting must not move the global RNG that training draws from
        example = torch.rand(1, 1, *PAPER_INPUT[1:], generator=torch.Generator().manual_seed(0))
        macs = count_macs(model, example, detector)
    finally:
        for hook in hooks:
            hook.remove()
    if first:
        conv, outputs = first[0]
        kernel = conv.kernel_size[0] * conv.kernel_size[1]
        macs += outputs * kernel * max(0, PAPER_INPUT[0] - conv.in_channels) // conv.groups
    return macs


def parameter_memory_mb(model: nn.Module) -> float:
    """Bytes of parameters and buffers as stored (dtype-aware), in MB (10^6 bytes)."""
    total = sum(t.numel() * t.element_size() for t in model.state_dict().values() if isinstance(t, torch.Tensor))
    return total / 1e6


def _cpu_busy_now(window_s: float = 0.5) -> float | None:
    """Share of all CPUs' time that other processes kept busy over a short window while this one
    sleeps (Linux /proc/stat, less this process's own threads, which may still spin after the last
    batch). The load average lags a minute and counts our own training just before, so it cannot
    tell a busy machine from our own last epoch."""
    def sample() -> tuple[int, int, float]:
        with open("/proc/stat") as stat:
            fields = [int(x) for x in stat.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
        own = os.times()
        return sum(fields), fields[3] + fields[4], own.user + own.system

    try:
        total, idle, own = sample()
        time.sleep(window_s)
        total2, idle2, own2 = sample()
        ticks = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
    busy = (total2 - total) - (idle2 - idle) - (own2 - own) * ticks
    return round(max(0.0, busy) / max(total2 - total, 1), 3)


def machine_load(sample_busy: bool = True) -> dict:
    """Load averages, the CPUs' busy share right now (a 0.5 s sample, skipped with `sample_busy=False`),
    CPUs and torch threads: latency means little without them."""
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:  # not available on this platform
        load = None
    return {"load_avg": load, "busy_now": _cpu_busy_now() if sample_busy else None, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads()}


def busy_warning(load: dict, what: str = "latency") -> str | None:
    """A one-line warning when other processes keep more than half the CPUs busy (our threshold);
    where that cannot be read, when the 1-minute load average exceeds half the CPUs."""
    cpus = load.get("cpu_count") or 1
    if load.get("busy_now") is not None:
        if load["busy_now"] > 0.5:
            return (f"warning: machine busy (other processes used {load['busy_now']:.0%} of {cpus} CPUs just before "
                    f"measuring {what}); CPU latency figures will be high and noisy")
        return None
    if load.get("load_avg") and load["load_avg"][0] > 0.5 * cpus:
        return (f"warning: machine busy (1-min load average {load['load_avg'][0]} on {cpus} CPUs) before measuring "
                f"{what}; CPU latency figures will be high and noisy")
    return None


def cpu_latency(model: nn.Module, example: torch.Tensor, detector: bool, runs: int = 20, warmup: int = 3,
                what: str = "latency") -> dict:
    """Batch-1 CPU wall time per frame: median and spread over `runs` timed passes after `warmup`
    untimed ones, with the load before and after, so a figure taken on a busy machine shows it.

    Prints one warning line on stderr when the machine is busy before measuring.
    """
    model = model.eval()
    inputs = [example[0]] if detector else example
    before = machine_load()
    warning = busy_warning(before, what)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    times = []
    with torch.inference_mode():
        for k in range(warmup + max(1, runs)):
            started = time.perf_counter()
            model(inputs)
            if k >= warmup:
                times.append((time.perf_counter() - started) * 1000)
    if len(times) >= 2:
        deciles = statistics.quantiles(times, n=10, method="inclusive")
        quartiles = statistics.quantiles(times, n=4, method="inclusive")
    else:
        deciles = quartiles = [times[0]] * 9
    return {
        "median_ms": round(statistics.median(times), 3),
        "p10_ms": round(deciles[0], 3), "p90_ms": round(deciles[-1], 3),
        "iqr_ms": round(quartiles[2] - quartiles[0], 3),
        "min_ms": round(min(times), 3), "max_ms": round(max(times), 3),
        "runs": len(times), "warmup": warmup,
        "load_avg_before": before["load_avg"], "load_avg_after": machine_load(sample_busy=False)["load_avg"], "busy_before": before["busy_now"],
        "cpu_count": before["cpu_count"], "torch_threads": before["torch_threads"],
        "busy": warning is not None,
    }


def cpu_latency_ms(model: nn.Module, example: torch.Tensor, detector: bool, runs: int = 20, warmup: int = 3) -> float:
    """Median wall time of one frame (batch of 1) on the CPU, in milliseconds (see `cpu_latency`)."""
    return cpu_latency(model, example, detector, runs, warmup)["median_ms"]


def latency_text(stats: dict | None) -> str:
    """"12.3 (p10–p90 11.9–14.0, load 0.4/2)" for reports; "n/a" without figures."""
    if not stats:
        return "n/a"
    load = (stats.get("load_avg_before") or [None])[0]
    return (f"{stats['median_ms']:.1f} (p10–p90 {stats['p10_ms']:.1f}–{stats['p90_ms']:.1f}, "
            f"load {load if load is not None else '?'}/{stats.get('cpu_count')} CPUs)")


def cost_figures(model: nn.Module, height: int, width: int, detector: bool, latency_runs: int = 20) -> dict:
    """A run's cost dict. Keys kept from before: input, macs_g, flops_g, params_m, memory_mb,
    cpu_latency_ms (the median), cpu_threads; added: MACs at the paper's convention and the
    latency's spread and machine load (`cpu_latency`)."""
    example = torch.rand(1, 1, height, width)
    model = model.to("cpu")
    macs = count_macs(model, example, detector)
    latency = cpu_latency(model, example, detector, latency_runs)
    return {
        "input": f"1x{height}x{width} (grey)",
        "macs_g": round(macs / 1e9, 4),
        "flops_g": round(2 * macs / 1e9, 4),
        "macs_224x224x3_g": round(macs_at_paper_convention(model, detector) / 1e9, 4),
        "macs_224x224x3_label": PAPER_MACS_LABEL,
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 4),
        "memory_mb": round(parameter_memory_mb(model), 3),
        "cpu_latency_ms": round(latency["median_ms"], 2),
        "cpu_latency": latency,
        "cpu_threads": torch.get_num_threads(),
    }
