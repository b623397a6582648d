"""Draw one ultrasound-like frame of the fetus phantom for given tags and boxes.

The look follows the published FPUS23 frames: a fan-shaped sector on black, bright granular phantom
tissue with depth attenuation, a dark fluid region, and fetal anatomy drawn by bright echogenic
outlines with grey interiors, with acoustic shadows behind bone. Each anatomy is drawn inside its
box and has its own shape (skull ring, round abdomen with spine and stomach, long femur, thin arm
with hand), and the tags leave cues a model can learn:

- orientation: placenta on the far (hd: head down) or near (hu) wall of the fluid, floating echoes
  in the fluid when the head is up; spine on the probe side (vb: back towards the probe) or the far
  side (vf) — all survive a left-right flip;
- probe: longitudinal (v) body silhouette vs transverse (h) round section;
- plane: skull midline + thalami (bpd), stomach bubble + umbilical vein (ac), one straight bright
  femur (fl), oblique partial structures (no_plane).

Pure numpy; everything is drawn only inside the slice it touches so a frame costs milliseconds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
import numpy as np

from .. import schema
from ..seeding import stable_seed

SECTOR_HALF_ANGLE = math.radians(33.0)


@dataclass(frozen=True)
class FrameSpec:
    """What to draw: the frame's tags (our class names) and boxes as (category, x, y, w, h)."""

    stream: str
    index: int
    orientation: str | None = None
    anatomy: str | None = None
    plane: str | None = None
    probe: str | None = None
    boxes: tuple[tuple[str, float, float, float, float], ...] = ()
    width: int = schema.FRAME_WIDTH
    height: int = schema.FRAME_HEIGHT


@dataclass(frozen=True)
class Style:
    """A "machine": global look parameters. The default imitates the FPUS23 phantom recordings."""

    tissue: float = 0.60
    fluid: float = 0.13
    gain_falloff: float = 0.9  # attenuation over the depth of the sector
    speckle_sigma: float = 0.24
    outline: float = 0.95
    interior: float = 0.50
    sector_half_angle: float = SECTOR_HALF_ANGLE
    gamma: float = 1.0
    name: str = "fpus23-phantom"


DEFAULT_STYLE = Style()


@dataclass
class _Geometry:
    height: int
    width: int
    apex_x: float
    apex_y: float
    r_min: float
    r_max: float
    radius: np.ndarray
    theta: np.ndarray
    sector: np.ndarray  # soft mask 0..1
    attenuation: np.ndarray
    speckle_bank: list[np.ndarray] = field(default_factory=list)


@lru_cache(maxsize=4)
def _geometry(height: int, width: int, style: Style) -> _Geometry:
    apex_x, apex_y = width / 2.0, -0.39 * height
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    radius = np.hypot(xx - apex_x, yy - apex_y)
    theta = np.arctan2(xx - apex_x, yy - apex_y)
    r_min, r_max = 0.42 * height, 1.34 * height
    edge = 2.0
    sector = (
        np.clip((style.sector_half_angle - np.abs(theta)) * radius / edge, 0, 1)
        * np.clip((radius - r_min) / edge, 0, 1)
        * np.clip((r_max - radius) / edge, 0, 1)
    ).astype(np.float32)
    depth = np.clip((radius - r_min) / (r_max - r_min), 0, 1)
    attenuation = (1.0 - style.gain_falloff * 0.45 * depth + 0.12 * np.exp(-depth * 8)).astype(np.float32)
    geometry = _Geometry(height, width, apex_x, apex_y, r_min, r_max, radius, theta, sector, attenuation)
    bank_rng = np.random.default_rng(stable_seed("speckle-bank", style.name, height, width))
    for _ in range(3):
        geometry.speckle_bank.append(_speckle_texture(bank_rng, 2 * height, 2 * width, style.speckle_sigma))
    return geometry


def _blur(image: np.ndarray, ky: int, kx: int) -> np.ndarray:
    """Separable box blur (twice, ~Gaussian) with edge padding."""
    out = image
    for _ in range(2):
        if kx > 1:
            padded = np.pad(out, ((0, 0), (kx // 2, kx - 1 - kx // 2)), mode="edge")
            c = np.cumsum(padded, axis=1, dtype=np.float32)
            c = np.concatenate([np.zeros((c.shape[0], 1), np.float32), c], axis=1)
            out = (c[:, kx:] - c[:, :-kx]) / kx
        if ky > 1:
            padded = np.pad(out, ((ky // 2, ky - 1 - ky // 2), (0, 0)), mode="edge")
            c = np.cumsum(padded, axis=0, dtype=np.float32)
            c = np.concatenate([np.zeros((1, c.shape[1]), np.float32), c], axis=0)
            out = (c[ky:] - c[:-ky]) / ky
    return out


def _speckle_texture(rng: np.random.Generator, height: int, width: int, sigma: float) -> np.ndarray:
    # Fully developed speckle is Rayleigh; lateral smearing gives the elongated grain of US images.
    noise = rng.rayleigh(1.0, size=(height, width)).astype(np.float32)
    grain = _blur(noise, 2, 3)
    grain = (grain - grain.mean()) / (grain.std() + 1e-6)
    return np.clip(1.0 + sigma * grain, 0.15, 2.5).astype(np.float32)


class _Canvas:
    """Echo amplitude image being composed; shapes add into slices of it."""

    def __init__(self, geometry: _Geometry, style: Style, rng: np.random.Generator):
        self.g = geometry
        self.style = style
        self.rng = rng
        self.echo = np.full((geometry.height, geometry.width), style.tissue, np.float32)
        self.shadow = np.ones((geometry.height, geometry.width), np.float32)

    def _window(self, cx: float, cy: float, extent: float) -> tuple[slice, slice, np.ndarray, np.ndarray]:
        h, w = self.g.height, self.g.width
        y0, y1 = max(0, int(cy - extent - 2)), min(h, int(cy + extent + 3))
        x0, x1 = max(0, int(cx - extent - 2)), min(w, int(cx + extent + 3))
        ys = np.arange(y0, y1, dtype=np.float32)[:, None] - cy
        xs = np.arange(x0, x1, dtype=np.float32)[None, :] - cx
        return slice(y0, y1), slice(x0, x1), ys, xs

    def ellipse(self, cx, cy, a, b, angle, *, fill=None, ring=0.0, ring_width=2.5, softness=1.5, arc=None):
        """Filled and/or outlined ellipse; `arc` (start, end) radians limits the outline."""
        if a < 1 or b < 1:
            return
        sy, sx, ys, xs = self._window(cx, cy, max(a, b) + ring_width * 2)
        if ys.size == 0 or xs.size == 0:
            return
        cos, sin = math.cos(angle), math.sin(angle)
        u = xs * cos + ys * sin
        v = -xs * sin + ys * cos
        rho = np.sqrt((u / a) ** 2 + (v / b) ** 2)
        mean_axis = (a + b) / 2
        region = self.echo[sy, sx]
        if fill is not None:
            inside = np.clip((1.0 - rho) * mean_axis / softness + 0.5, 0, 1)
            region += inside * (fill - region)
        if ring:
            band = np.exp(-(((rho - 1.0) * mean_axis / ring_width) ** 2))
            if arc is not None:
                phi = np.arctan2(v / b, u / a)
                start, end = arc
                span = (phi - start) % (2 * math.pi)
                band = band * (span <= (end - start) % (2 * math.pi))
            region += ring * band

    def segment(self, x0, y0, x1, y1, width, brightness, *, cap=1.0):
        """A bright bar (bone) from (x0, y0) to (x1, y1)."""
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        length = math.hypot(x1 - x0, y1 - y0)
        if length < 1:
            return
        sy, sx, ys, xs = self._window(cx, cy, length / 2 + width * 2)
        dx, dy = (x1 - x0) / length, (y1 - y0) / length
        along = xs * dx + ys * dy
        across = -xs * dy + ys * dx
        clamp = np.clip(along, -length / 2, length / 2)
        dist = np.sqrt((along - clamp) ** 2 * cap + across**2)
        self.echo[sy, sx] += brightness * np.exp(-((dist / width) ** 2))

    def cast_shadow(self, x0, y0, x1, y1, strength):
        """Acoustic shadow behind a reflector spanning the points, along the beam (away from the apex)."""
        g = self.g
        t0 = math.atan2(x0 - g.apex_x, y0 - g.apex_y)
        t1 = math.atan2(x1 - g.apex_x, y1 - g.apex_y)
        lo, hi = min(t0, t1), max(t0, t1)
        r_start = min(math.hypot(x0 - g.apex_x, y0 - g.apex_y), math.hypot(x1 - g.apex_x, y1 - g.apex_y))
        top = max(0, int(min(y0, y1)))
        theta, radius = g.theta[top:], g.radius[top:]
        soft = 0.012
        angular = np.clip((theta - lo) / soft + 0.5, 0, 1) * np.clip((hi - theta) / soft + 0.5, 0, 1)
        radial = np.clip((radius - r_start) / 6.0, 0, 1)
        self.shadow[top:] *= 1.0 - strength * angular * radial

    def mottle(self, cx, cy, a, b, amount):
        """Low-frequency texture inside a region (organ interiors are not flat)."""
        sy, sx, ys, xs = self._window(cx, cy, max(a, b))
        if ys.size == 0 or xs.size == 0:
            return
        inside = ((xs / a) ** 2 + (ys / b) ** 2) < 1
        blobs = self.rng.normal(0, 1, size=(max(1, ys.shape[0] // 8 + 2), max(1, xs.shape[1] // 8 + 2))).astype(np.float32)
        up = np.repeat(np.repeat(blobs, 8, axis=0), 8, axis=1)[: ys.shape[0], : xs.shape[1]]
        self.echo[sy, sx] += amount * inside * _blur(up, 5, 5)


def _jitter(rng: np.random.Generator, scale: float) -> float:
    return float(rng.normal(0.0, scale))


def _draw_head(c: _Canvas, box, plane: str | None, rng) -> None:
    _, x, y, w, h = box
    cx, cy, a, b = x + w / 2, y + h / 2, w * 0.44, h * 0.44
    angle = _jitter(rng, 0.05)
    thickness = max(2.0, 0.045 * (a + b))
    c.ellipse(cx, cy, a, b, angle, fill=c.style.interior * 0.95)
    c.mottle(cx, cy, a * 0.9, b * 0.9, 0.05)
    oblique = plane == "no_plane"
    c.ellipse(cx, cy, a, b, angle, ring=c.style.outline, ring_width=thickness,
              arc=(0.3, 2 * math.pi - 0.3) if oblique else None)
    c.cast_shadow(cx - a * 0.6, cy + b * 0.85, cx + a * 0.6, cy + b * 0.85, 0.35)
    if plane == "bpd":  # midline falx and the two thalami
        c.segment(cx - a * 0.75, cy, cx + a * 0.75, cy, 1.6, 0.55)
        c.ellipse(cx - a * 0.22, cy + b * 0.05, a * 0.16, b * 0.22, 0.3, fill=0.18)
        c.ellipse(cx + a * 0.22, cy + b * 0.05, a * 0.16, b * 0.22, -0.3, fill=0.18)
    else:  # choroid / orbit structures of a non-standard plane
        c.ellipse(cx + a * 0.25, cy - b * 0.2, a * 0.25, b * 0.18, 0.6, ring=0.35, ring_width=1.5)


def _draw_abdomen(c: _Canvas, box, plane: str | None, view_back: bool, rng) -> None:
    _, x, y, w, h = box
    cx, cy, a, b = x + w / 2, y + h / 2, w * 0.45, h * 0.45
    angle = _jitter(rng, 0.04)
    c.ellipse(cx, cy, a, b, angle, fill=c.style.interior * 0.9)
    c.mottle(cx, cy, a * 0.9, b * 0.9, 0.06)
    c.ellipse(cx, cy, a, b, angle, ring=c.style.outline * 0.7, ring_width=max(2.5, 0.035 * (a + b)))
    # Spine: a short chain of bright vertebrae on the back side, with shadows.
    side = -1.0 if view_back else 1.0
    sy_ = cy + side * b * 0.68
    for k in range(-1, 2):
        vx = cx + k * a * 0.16
        c.ellipse(vx, sy_, max(2.0, a * 0.06), max(2.0, b * 0.07), 0.0, fill=1.25)
    c.cast_shadow(cx - a * 0.22, sy_, cx + a * 0.22, sy_, 0.45)
    if plane == "ac":  # the standard plane: a large stomach bubble and the curved umbilical vein
        c.ellipse(cx - a * 0.28, cy - side * b * 0.08, a * 0.3, b * 0.26, 0.4, fill=0.05)
        c.segment(cx + a * 0.0, cy - side * b * 0.05, cx + a * 0.5, cy - side * b * 0.3, 2.8, 0.8)
        c.ellipse(cx + a * 0.25, cy - side * b * 0.15, a * 0.35, b * 0.3, 0.0, ring=0.45, ring_width=2.0, arc=(0.0, 1.6))
    else:
        c.ellipse(cx - a * 0.35, cy - side * b * 0.25, a * 0.1, b * 0.07, 0.2, fill=0.2)


def _draw_legs(c: _Canvas, box, plane: str | None, rng) -> None:
    _, x, y, w, h = box
    cx, cy = x + w / 2, y + h / 2
    horizontal = w >= h
    length = (w if horizontal else h) * 0.78
    c.ellipse(cx, cy, w * 0.45, h * 0.42, 0.0, fill=c.style.interior * 0.85)
    if horizontal:
        x0, y0, x1, y1 = cx - length / 2, cy + _jitter(rng, 1), cx + length / 2, cy + h * 0.08
    else:
        x0, y0, x1, y1 = cx + _jitter(rng, 1), cy - length / 2, cx + w * 0.08, cy + length / 2
    straight_bright = 1.5 if plane == "fl" else 1.1
    c.segment(x0, y0, x1, y1, 2.6, straight_bright, cap=0.5)
    if plane == "fl":  # the femur measured end to end: bright metaphyses
        c.ellipse(x0, y0, 3.5, 3.5, 0.0, fill=1.3)
        c.ellipse(x1, y1, 3.5, 3.5, 0.0, fill=1.3)
    else:  # the second leg, oblique
        offset = (h if horizontal else w) * 0.25
        if horizontal:
            c.segment(x0 + length * 0.1, y0 - offset, x1 - length * 0.2, y1 - offset * 0.6, 2.0, 0.75)
        else:
            c.segment(x0 - offset, y0 + length * 0.1, x1 - offset * 0.6, y1 - length * 0.2, 2.0, 0.75)
    c.cast_shadow(x0, y0, x1, y1, 0.55)


def _draw_arm(c: _Canvas, box, rng) -> None:
    _, x, y, w, h = box
    cx, cy = x + w / 2, y + h / 2
    horizontal = w >= h
    length = (w if horizontal else h) * 0.62
    c.ellipse(cx, cy, w * 0.4, h * 0.4, 0.0, fill=c.style.interior * 0.8)
    if horizontal:
        x0, y0, x1, y1 = cx - length / 2, cy - h * 0.1, cx + length / 2, cy + h * 0.1
    else:
        x0, y0, x1, y1 = cx - w * 0.1, cy - length / 2, cx + w * 0.1, cy + length / 2
    c.segment(x0, y0, x1, y1, 2.6, 0.85)
    for k in range(3):  # the hand: a cluster of small bright phalanges
        hx = x1 + (k - 1) * 3.0 + _jitter(rng, 0.6)
        hy = y1 + (k - 1) * 2.0 + _jitter(rng, 0.6)
        c.ellipse(hx, hy, 3.0, 3.0, 0.0, fill=1.0)


def _fluid_region(spec: FrameSpec, g: _Geometry, rng: np.random.Generator, stream_rng: np.random.Generator):
    if spec.boxes:
        x0 = min(b[1] for b in spec.boxes)
        y0 = min(b[2] for b in spec.boxes)
        x1 = max(b[1] + b[3] for b in spec.boxes)
        y1 = max(b[2] + b[4] for b in spec.boxes)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        a, b = (x1 - x0) / 2 * 1.12 + 14, (y1 - y0) / 2 * 1.15 + 12
    else:
        drift = math.sin(spec.index / 37.0 + float(stream_rng.uniform(0, 6.28)))
        cx = g.width / 2 + float(stream_rng.uniform(-60, 60)) + 25 * drift
        cy = g.height * 0.48 + float(stream_rng.uniform(-20, 20))
        a = float(stream_rng.uniform(150, 210))
        b = float(stream_rng.uniform(85, 115))
    return cx + _jitter(rng, 0.8), cy + _jitter(rng, 0.8), a, b


def _draw_body(c: _Canvas, spec: FrameSpec, fluid, rng) -> None:
    """Body silhouette, placenta and spine: orientation and probe cues, present even without boxes."""
    cx, cy, fa, fb = fluid
    head_down = (spec.orientation or "hd")[:2] == "hd"
    view_back = (spec.orientation or "vb")[2:] == "vb"
    transverse = spec.probe == "h"
    side = -1.0 if head_down else 1.0
    if transverse:
        a, b = fa * 0.45, fb * 0.55
    else:
        a, b = fa * 0.72, fb * 0.5
    c.ellipse(cx, cy, a, b, 0.0, fill=c.style.interior * 0.75, softness=4.0)
    # Placenta: a thick bright crescent just inside the far wall of the fluid when the head is down,
    # the near wall when it is up; and with the head up the fluid carries floating echoes (vernix).
    # Outside the fetus (not mistaken for a boxed anatomy), visible wherever the fluid is, and
    # unchanged by a left-right mirror, so the paper's horizontal-flip augmentation keeps them.
    arc = (math.pi / 2 - 1.1, math.pi / 2 + 1.1) if head_down else (-math.pi / 2 - 1.1, -math.pi / 2 + 1.1)
    c.ellipse(cx, cy, fa - 5, fb - 5, 0.0, ring=0.75, ring_width=6.0, arc=arc)
    if not head_down:
        for _ in range(60):
            r, t = math.sqrt(float(rng.random())) * 0.92, float(rng.uniform(0, 2 * math.pi))
            c.ellipse(cx + r * fa * math.cos(t), cy + r * fb * math.sin(t), 1.8, 1.8, 0.0, fill=0.8)
    # Spine along the back: towards the probe (top) when the back faces it, else the far side.
    spine_y = cy + (-1.0 if view_back else 1.0) * fb * 0.72
    steps = 9
    for k in range(steps):
        t = (k + 0.5) / steps - 0.5
        c.ellipse(cx - side * fa * 0.1 + t * fa * 1.2, spine_y + 3 * math.cos(t * 3), 3.2, 3.2, 0.0, fill=1.3)
    c.cast_shadow(cx - fa * 0.7, spine_y, cx + fa * 0.5, spine_y, 0.35)


def render(spec: FrameSpec, seed: int = 0, style: Style = DEFAULT_STYLE) -> np.ndarray:
    """The frame as a uint8 grayscale array of shape (height, width)."""
    g = _geometry(spec.height, spec.width, style)
    rng = np.random.default_rng(stable_seed(seed, style.name, spec.stream, spec.index))
    stream_rng = np.random.default_rng(stable_seed(seed, style.name, spec.stream))
    c = _Canvas(g, style, rng)

    # Container wall: a bright curved reflector deep in the field, as in the phantom recordings.
    wall_r = g.r_max * float(stream_rng.uniform(0.86, 0.95))
    band = np.exp(-(((g.radius - wall_r) / 2.2) ** 2)) * (np.abs(g.theta - float(stream_rng.uniform(-0.2, 0.2))) < 0.38)
    c.echo += 0.6 * band.astype(np.float32)

    fluid = _fluid_region(spec, g, rng, stream_rng)
    fcx, fcy, fa, fb = fluid
    c.ellipse(fcx, fcy, fa, fb, _jitter(rng, 0.01), fill=style.fluid, softness=3.0)
    c.ellipse(fcx, fcy, fa, fb, 0.0, ring=0.12, ring_width=3.0)
    if spec.orientation is not None:
        _draw_body(c, spec, fluid, rng)

    boxes = list(spec.boxes)
    if not boxes and spec.anatomy is not None:  # anatomy in view but not boxed: draw it centred
        size = {"head": (120, 105), "abdomen": (150, 110), "legs": (120, 60), "arms": (80, 60)}[spec.anatomy]
        boxes = [(spec.anatomy, fcx - size[0] / 2, fcy - size[1] / 2, size[0], size[1])]
    view_back = (spec.orientation or "vb")[2:] == "vb"
    order = {"abdomen": 0, "head": 1, "legs": 2, "arms": 3}
    for box in sorted(boxes, key=lambda b: (order.get(b[0], 9), b[1], b[2])):
        category = box[0]
        if category == "head":
            _draw_head(c, box, spec.plane, rng)
        elif category == "abdomen":
            _draw_abdomen(c, box, spec.plane, view_back, rng)
        elif category == "legs":
            _draw_legs(c, box, spec.plane, rng)
        elif category == "arms":
            _draw_arm(c, box, rng)

    bank = g.speckle_bank[int(rng.integers(len(g.speckle_bank)))]
    oy = int(rng.integers(0, bank.shape[0] - g.height))
    ox = int(rng.integers(0, bank.shape[1] - g.width))
    speckle = bank[oy : oy + g.height, ox : ox + g.width]
    image = c.echo * c.shadow * g.attenuation * speckle * g.sector
    if style.gamma != 1.0:
        image = np.power(np.clip(image, 0, None), style.gamma)
    return np.clip(image * 235.0, 0, 255).astype(np.uint8)


def spec_from_frame(frame) -> FrameSpec:
    """A FrameSpec for a cvat.Frame record (tags and boxes as read from an export)."""
    return FrameSpec(
        stream=frame.stream,
        index=frame.index,
        orientation=frame.labels.get("orientation"),
        anatomy=frame.labels.get("anatomy"),
        plane=frame.labels.get("plane"),
        probe=frame.labels.get("probe"),
        boxes=tuple((b.category, b.x, b.y, b.w, b.h) for b in frame.boxes),
        width=frame.width or schema.FRAME_WIDTH,
        height=frame.height or schema.FRAME_HEIGHT,
    )

