"""INT8 quantisation-aware training for CPU inference, via torchao's PT2E flow and the X86 quantizer.

Why this path: `torch.ao.quantization` eager mode (the paper's FBGEMM flow) is deprecated; PT2E
(`torch.export` -> `prepare_qat_pt2e` -> train -> `convert_pt2e`) is the maintained one. The x86
Inductor quantizer's INT8 graph runs as oneDNN INT8 kernels once compiled with Inductor
(`torch.compile`, with freezing); uncompiled, the same graph runs as FP32 reference maths
(correct, not fast).

What is quantised: classifiers entirely (activations per tensor, weights per channel, INT8);
detectors their ResNet trunk only. The Faster R-CNN heads (RPN convolutions, box head, anchor
decoding, NMS and RoIAlign) stay FP32: they are data-dependent code that `torch.export` does not
capture as one static graph. The box head's two fully connected layers run once per proposal, so
with many proposals they can cost more than the trunk: the detector's INT8 speed-up is partial.

A quantised model is stored as its QAT state (see `qat_state`) and rebuilt by `load_int8`.
"""
from __future__ import annotations

import os
from collections import OrderedDict

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock


class QuantizationUnavailable(RuntimeError):
    pass


def _torchao():
    try:
        from torchao.quantization.pt2e import allow_exported_model_train_eval, move_exported_model_to_eval
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86
    except ImportError as error:
        raise QuantizationUnavailable(
            f"INT8 needs torchao (pip install 'fpus23[baselines]'; it pins torchao): {error}") from None
    return allow_exported_model_train_eval, move_exported_model_to_eval, convert_pt2e, prepare_qat_pt2e, x86


class _ExportableBasicBlock(BasicBlock):
    """torchvision's BasicBlock with its two ReLU calls as two modules.

    The x86 quantizer matches fusion patterns per module; one ReLU module called twice forms a single
    partition with two outputs, which it rejects. Parameters and state_dict keys are unchanged.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu_out(out + identity)


def make_exportable(model: nn.Module) -> nn.Module:
    for module in model.modules():
        if isinstance(module, BasicBlock) and not isinstance(module, _ExportableBasicBlock):
            module.__class__ = _ExportableBasicBlock
            module.relu = nn.ReLU()
            module.relu_out = nn.ReLU()
    return model


class Trunk(nn.Module):
    """A quantised (or QAT-prepared) graph where Faster R-CNN expects its backbone."""

    def __init__(self, graph: nn.Module, out_channels: int):
        super().__init__()
        self.graph = graph
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.graph(x)


def _dynamic_shapes() -> tuple[dict, ...]:
    # The batch may vary; the spatial size is the bundle's input size (Faster R-CNN pads it to
    # multiples of 32). Inductor's INT8 convolutions are prepacked for a fixed spatial size.
    return ({0: torch.export.Dim("batch", min=1, max=1024)},)


def _example(detector: bool, height: int, width: int) -> torch.Tensor:
    if detector:
        height, width = 32 * -(-height // 32), 32 * -(-width // 32)
    return torch.rand(2, 1, height, width)


def quantized_part(model: nn.Module, detector: bool) -> nn.Module:
    return model.backbone if detector else model


def prepare_qat(model: nn.Module, detector: bool, height: int, width: int) -> nn.Module:
    """Insert fake-quantisation for INT8 (in place for detectors' trunk); returns the model to train.

    Train it as usual (model.train()/eval() work), then call `convert`.
    """
    allow_train_eval, _, _, prepare_qat_pt2e, x86 = _torchao()
    part = make_exportable(quantized_part(model, detector)).train()
    exported = torch.export.export(part, (_example(detector, height, width),), dynamic_shapes=_dynamic_shapes())
    quantizer = x86.X86InductorQuantizer()
    quantizer.set_global(x86.get_default_x86_inductor_quantization_config(is_qat=True))
    prepared = prepare_qat_pt2e(exported.module(), quantizer)
    allow_train_eval(prepared)
    if detector:
        model.backbone = Trunk(prepared, part.out_channels)
        return model
    return prepared


def convert(prepared: nn.Module, detector: bool) -> nn.Module:
    """The INT8 module of a QAT-prepared model (the whole classifier, or the detector's trunk)."""
    allow_train_eval, move_to_eval, convert_pt2e, _, _ = _torchao()
    graph = prepared.backbone.graph if detector else prepared
    move_to_eval(graph)
    converted = convert_pt2e(graph)
    allow_train_eval(converted)  # so that evaluation code may call .eval() as on any model
    return converted


def int8_memory_mb(converted: nn.Module) -> float:
    """Bytes of the tensors the INT8 graph holds (INT8 weights, FP32 biases, scales, zero points)."""
    total = 0
    for node in converted.graph.nodes:
        if node.op == "get_attr":
            value = converted
            for name in node.target.split("."):
                value = getattr(value, name)
            if isinstance(value, torch.Tensor):
                total += value.numel() * value.element_size()
    return total / 1e6


class Compiled(nn.Module):
    """An INT8 graph compiled by Inductor with freezing (weights constant-folded and prepacked for oneDNN).

    Freezing is an Inductor setting read when the graph compiles, i.e. on the first call of each new
    input shape; it is switched on around the calls only, not for the whole process. Inductor's INT8
    convolutions fail to compile for a symbolic batch size, so shapes are static and batches are
    padded to a power of two: at most a handful of compilations (seconds each), then cached.
    """

    def __init__(self, converted: nn.Module):
        super().__init__()
        self.compiled = torch.compile(converted, dynamic=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch._inductor.config as inductor_config

        size = x.shape[0]
        padded = 1 << (size - 1).bit_length()
        if padded != size:
            x = torch.cat([x, x.new_zeros((padded - size, *x.shape[1:]))])
        with inductor_config.patch(freezing=True), torch.no_grad():
            out = self.compiled(x)
        if isinstance(out, dict):  # a feature pyramid's levels, in Faster R-CNN's order
            return OrderedDict((name, level[:size]) for name, level in out.items())
        return out[:size]


def qat_state(prepared: nn.Module, detector: bool) -> dict:
    """What to store: the QAT model's weights and learnt quantisation parameters (a plain state_dict).

    A converted PT2E graph does not survive a round trip through `torch.export.save` in a form
    Inductor can compile, and pickling the graph would make a bundle executable code; so bundles keep
    this state and `load_int8` re-runs prepare and convert (seconds to tens of seconds), which
    gives the identical INT8 graph.
    """
    return quantized_part(prepared, detector).graph.state_dict() if detector else prepared.state_dict()


def float_weights(model: nn.Module, detector: bool, state: dict) -> nn.Module:
    """The FP32 model carrying a QAT state's weights and batch-norm statistics (in place).

    Evaluating it beside the INT8 model isolates what quantisation itself costs, apart from the extra
    training QAT gives. Parameter and buffer names survive torch.export, so they are matched by name.
    """
    part = quantized_part(model, detector)
    own = part.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise KeyError(f"QAT state lacks {missing[:5]}: not a state of this architecture")
    part.load_state_dict({k: state[k] for k in own})
    return model


def load_int8(model: nn.Module, detector: bool, height: int, width: int, state: dict, compile: bool | None = None) -> nn.Module:
    """Rebuild the INT8 model from an FP32 model of the same architecture and a `qat_state`.

    Returns the classifier's INT8 module, or the detector with an INT8 trunk. `compile=None` follows
    FPUS23_INT8_COMPILE (default 1): Inductor compiles on the first call (tens of seconds on a small
    CPU, needs a C++ compiler) and runs oneDNN INT8 kernels; uncompiled, the results are the same
    (reference FP32 maths) and slower than the FP32 model.
    """
    if detector:
        model.eval()  # the heads; the trunk's mode is set by convert
    prepared = prepare_qat(model, detector, height, width)
    target = prepared.backbone.graph if detector else prepared
    target.load_state_dict(state)
    converted = convert(prepared, detector)
    if compile is None:
        compile = os.environ.get("FPUS23_INT8_COMPILE", "1") != "0"
    return attach(prepared, Compiled(converted) if compile else converted, detector)


def attach(model: nn.Module, int8: nn.Module, detector: bool) -> nn.Module:
    """The servable model: the INT8 module itself, or the detector with its trunk replaced."""
    if detector:
        model.backbone = Trunk(int8, model.backbone.out_channels)
        return model
    return int8
