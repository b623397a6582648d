"""The paper's networks, from torchvision building blocks.

- `resnet34`: torchvision's ResNet34 with its first layer adapted to one-channel ultrasound frames
  and its last layer to the task's classes, as the paper describes.
- `resnet8` / `resnet10`: the paper's searched networks: conv1 + three (ResNet8: 64/128/256) or four
  (ResNet10: 64/128/256/512) stages of one BasicBlock each, then global pooling and a linear layer.
- `fasterrcnn_resnet34` / `fasterrcnn_resnet10`: Faster R-CNN on the trunk's last-stage features, or
  on a feature pyramid over stages 2-4 (`fpn=True`; our recipe's default, see train.py). The paper
  gives no anchors, proposal counts or pyramid (§4.1 names only "a modified
  Faster-RCNN with our ResNet34 backbone"); our anchors are fitted to the annotations (`fitted_anchors`).

ImageNet weights (`init="imagenet"`) come only from the local torch hub cache (no download here);
`init="scratch"` works everywhere.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from torchvision.models import ResNet34_Weights, resnet34
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.resnet import BasicBlock
from torchvision.ops import MultiScaleRoIAlign

from fpus23_dataset import schema
from fpus23_dataset.synth import annotation_stats

CLASSIFIER_ARCHS = ("resnet34", "resnet10", "resnet8")
DETECTOR_ARCHS = ("fasterrcnn_resnet34", "fasterrcnn_resnet10")
IMAGENET_ARCHS = ("resnet34", "fasterrcnn_resnet34")  # torchvision publishes ImageNet weights for ResNet34 only
IN_CHANNELS = 1  # ultrasound frames are grey; any PNG mode is converted to L before the model


class InitError(RuntimeError):
    pass


def imagenet_weights_path() -> Path:
    """Where torchvision looks for the ResNet34 ImageNet file (torch hub cache)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(ResNet34_Weights.IMAGENET1K_V1.url).name


def _imagenet_state_dict() -> dict:
    path = imagenet_weights_path()
    if not path.is_file():
        raise InitError(
            f"--init imagenet needs the torchvision ResNet34 ImageNet weights at {path} (nothing is downloaded "
            f"here). Copy {Path(ResNet34_Weights.IMAGENET1K_V1.url).name} from a machine with internet "
            f"({ResNet34_Weights.IMAGENET1K_V1.url}) into that folder, or set TORCH_HOME; or use --init scratch."
        )
    return torch.load(path, map_location="cpu", weights_only=True)


def _adapt_first_conv(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """A conv taking `in_channels`; pretrained RGB filters are summed into the grey channel."""
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=conv.bias is not None)
    with torch.no_grad():
        if conv.in_channels == 3 and in_channels == 1:
            new.weight.copy_(conv.weight.sum(dim=1, keepdim=True))
    return new


def _stage(in_planes: int, planes: int, stride: int) -> nn.Sequential:
    downsample = None
    if stride != 1 or in_planes != planes:
        downsample = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
    return nn.Sequential(BasicBlock(in_planes, planes, stride, downsample))


class SmallResNet(nn.Module):
    """conv1 (7x7/2) + max-pool + one BasicBlock per stage + global average pooling + fc."""

    def __init__(self, widths: tuple[int, ...], num_classes: int, in_channels: int = IN_CHANNELS):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        stages, in_planes = [], widths[0]
        for k, planes in enumerate(widths):
            stages.append(_stage(in_planes, planes, 1 if k == 0 else 2))
            in_planes = planes
        self.layers = nn.Sequential(*stages)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        self.out_channels = in_planes
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.maxpool(self.relu(self.bn1(self.conv1(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.trunk(x)), 1))


def resnet34_classifier(num_classes: int, init: str = "scratch") -> nn.Module:
    model = resnet34()
    if init == "imagenet":
        model.load_state_dict(_imagenet_state_dict())
    elif init != "scratch":
        raise InitError(f"unknown init {init!r}: use scratch or imagenet")
    model.conv1 = _adapt_first_conv(model.conv1, IN_CHANNELS) if init == "imagenet" else nn.Conv2d(IN_CHANNELS, 64, 7, 2, 3, bias=False)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def build_classifier(arch: str, num_classes: int, init: str = "scratch") -> nn.Module:
    if arch == "resnet34":
        return resnet34_classifier(num_classes, init)
    if init != "scratch":
        raise InitError(f"{arch} has no ImageNet weights (it is the paper's searched network); use --init scratch")
    if arch == "resnet10":
        return SmallResNet((64, 128, 256, 512), num_classes)
    if arch == "resnet8":
        return SmallResNet((64, 128, 256), num_classes)
    raise ValueError(f"unknown classifier {arch!r}; expected one of {', '.join(CLASSIFIER_ARCHS)}")


def _trunk(arch: str, init: str) -> nn.Module:
    if arch == "fasterrcnn_resnet34":
        net = resnet34_classifier(1, init)
        trunk = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4)
        trunk.out_channels = 512
        return trunk
    if arch == "fasterrcnn_resnet10":
        if init != "scratch":
            raise InitError("the ResNet10 trunk has no ImageNet weights; use --init scratch")
        net = SmallResNet((64, 128, 256, 512), 1)
        trunk = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layers)
        trunk.out_channels = 512
        return trunk
    raise ValueError(f"unknown detector {arch!r}; expected one of {', '.join(DETECTOR_ARCHS)}")


def _fpn_backbone(arch: str, init: str) -> nn.Module:
    """The trunk's stages 2-4 (strides 8, 16, 32) under a feature pyramid (torchvision's FPN, 128
    channels, plus its max-pooled stride-64 level): small anatomies are pooled from stride-8 maps."""
    from torchvision.models.detection.backbone_utils import BackboneWithFPN

    trunk = _trunk(arch, init)
    stages = list(trunk.children())[4:] if arch == "fasterrcnn_resnet34" else list(trunk[4].children())
    body = nn.Sequential(*list(trunk.children())[:4], *stages)  # children 4..7 are stages 1..4
    return BackboneWithFPN(body, {"5": "0", "6": "1", "7": "2"}, [128, 256, 512], 128)


def fitted_anchors(image_height: int, count: int = 5) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Anchor sizes and aspect ratios (h/w) that cover the annotated boxes at the input size used.

    Ours, not the paper's (it gives none). torchvision's 128/256/512 suit COCO-sized objects in
    800-pixel images; FPUS23 boxes have a median side of 128 px at 672x389 and a 5th percentile of
    46 px (arms and legs: medians 83 and 88 px), and the searched networks run at half size or less,
    where an arm is ~40 px against a smallest anchor of 128. So: five sizes in a geometric series from
    the 5th to the 95th percentile of the box side (sqrt(w h)) of the real annotations, scaled to the
    input height, and the 5th/50th/95th percentiles of h/w as ratios. The percentiles come from the
    committed aggregate table (`fpus23_dataset/synth/annotation_stats.json`).
    """
    stats = annotation_stats()
    side = dict(zip(stats["levels"], stats["box_side"]))
    aspect = dict(zip(stats["levels"], stats["box_aspect_h_over_w"]))
    low, high = (side[level] * image_height / schema.FRAME_HEIGHT for level in (5, 95))
    sizes = tuple(max(8, round(low * (high / low) ** (k / (count - 1)))) for k in range(count))
    return sizes, (aspect[5], aspect[50], aspect[95])


def build_detector(arch: str, num_classes: int, init: str = "scratch", image_size: tuple[int, int] = (389, 672),
                   proposals: int | None = None, anchor_sizes: Sequence[int] | None = None,
                   aspect_ratios: Sequence[float] | None = None, box_representation: int | None = None,
                   fpn: bool = False) -> FasterRCNN:
    """Faster R-CNN; `num_classes` excludes the background; frames keep their size (no resize).

    `proposals` caps the RPN's proposals kept after NMS (and the RoIs sampled per image in training)
    for quick CPU runs; None keeps torchvision's defaults (2000/1000 proposals, 512 RoIs).
    Anchors default to `fitted_anchors(height)`; runs and bundles record the ones they used.
    `box_representation` narrows the box head's two fully connected layers (torchvision: 1024). At
    small inputs that head, not the trunk, is most of the work: 512x7x7 -> 1024 is 25.7 M MACs per
    region, 64 sampled regions per training image, against ~0.5 GMACs for a ResNet10 trunk at 0.35x.
    `fpn` (ours) pools regions from a feature pyramid instead of the last stage alone; the eight
    fitted anchor sizes go two per pyramid level, smallest on the finest.
    Inputs are in [0, 1]: grey frames are not normalised for the detector.
    """
    height, width = image_size
    fitted = fitted_anchors(height, 8 if fpn else 5)
    sizes, ratios = tuple(anchor_sizes or fitted[0]), tuple(aspect_ratios or fitted[1])
    if fpn:
        anchors = AnchorGenerator(sizes=tuple(sizes[k : k + 2] for k in range(0, 8, 2)), aspect_ratios=(ratios,) * 4)
        pool = MultiScaleRoIAlign(featmap_names=["0", "1", "2"], output_size=7, sampling_ratio=2)
    else:
        anchors = AnchorGenerator(sizes=(sizes,), aspect_ratios=(ratios,))
        pool = MultiScaleRoIAlign(featmap_names=["0"], output_size=7, sampling_ratio=2)
    limits = {}
    if proposals is not None:
        limits = dict(rpn_pre_nms_top_n_train=proposals * 2, rpn_post_nms_top_n_train=proposals,
                      rpn_pre_nms_top_n_test=proposals, rpn_post_nms_top_n_test=proposals,
                      box_batch_size_per_image=min(512, max(64, proposals // 2)))
    trunk = _fpn_backbone(arch, init) if fpn else _trunk(arch, init)
    if box_representation:
        limits.update(box_head=TwoMLPHead(trunk.out_channels * 7 * 7, box_representation),
                      box_predictor=FastRCNNPredictor(box_representation, num_classes + 1))
    return FasterRCNN(
        trunk, num_classes=None if box_representation else num_classes + 1, rpn_anchor_generator=anchors, box_roi_pool=pool,
        min_size=min(height, width), max_size=max(height, width), image_mean=[0.0], image_std=[1.0], **limits,
    )


# Classifier state-dict prefixes -> the detector trunk's (nn.Sequential built in `_trunk`).
_TRUNK_PREFIXES = {"conv1.": "0.", "bn1.": "1.", "layers.": "4.", "layer1.": "4.", "layer2.": "5.", "layer3.": "6.",
                   "layer4.": "7."}
_FLAT_STAGES = {f"layers.{k}.": f"{4 + k}." for k in range(4)}


def load_trunk(detector: FasterRCNN, classifier_state: dict) -> int:
    """Start a detector's trunk from a trained classifier of the same family (ours, for the quickstart:
    an anatomy classifier already knows what heads, arms, legs and abdomens look like). Tensors are
    copied where the name maps and the shape matches (ResNet8's three stages into ResNet10's four);
    returns how many were copied."""
    trunk = getattr(detector.backbone, "body", detector.backbone)  # with an FPN, its body holds the stages flat
    prefixes = _TRUNK_PREFIXES if trunk is detector.backbone else {**_TRUNK_PREFIXES, **_FLAT_STAGES}
    target = trunk.state_dict()
    copied = {}
    for name, tensor in classifier_state.items():
        prefix = max((p for p in prefixes if name.startswith(p)), key=len, default=None)
        mapped = prefix and prefixes[prefix] + name[len(prefix):]
        if mapped in target and target[mapped].shape == tensor.shape:
            copied[mapped] = tensor
    trunk.load_state_dict(copied, strict=False)
    return len(copied)


def build_model(task: str, arch: str, num_classes: int, init: str = "scratch", image_size: tuple[int, int] = (389, 672),
                proposals: int | None = None, anchor_sizes: Sequence[int] | None = None,
                aspect_ratios: Sequence[float] | None = None, box_representation: int | None = None,
                fpn: bool = False) -> nn.Module:
    if task == "bounds":
        return build_detector(arch, num_classes, init, image_size, proposals, anchor_sizes, aspect_ratios,
                              box_representation, fpn)
    return build_classifier(arch, num_classes, init)


def is_detector(arch: str) -> bool:
    return arch in DETECTOR_ARCHS


# Input size each architecture trains and serves at unless told otherwise, as a fraction of the
# 672x389 frame. The paper's ResNet34 models take full frames; the searched networks exist to be
# cheap, and at full size ResNet8 alone costs ~3.6 GMACs (over 100 ms a frame on a 2-core CPU).
DEFAULT_IMAGE_SCALE = {"resnet34": 1.0, "fasterrcnn_resnet34": 1.0, "resnet10": 0.5, "resnet8": 0.35, "fasterrcnn_resnet10": 0.5}


def default_image_scale(arch: str) -> float:
    return DEFAULT_IMAGE_SCALE[arch]


def default_arch(task: str) -> str:
    return "fasterrcnn_resnet34" if task == "bounds" else "resnet34"
