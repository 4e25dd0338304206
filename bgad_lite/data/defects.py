"""Real textures and synthetic defects: the pictures of the embedded data set.

Three real photographs ship with scikit-image (``skimage.data.grass``, ``brick`` and
``gravel``: 512x512 greyscale, public domain / CC0). Normal images are random crops of one
texture (:func:`normal_crop`: flipped, rotated by multiples of 90 degrees, a +-5%
brightness/contrast jitter); :func:`add_defect` draws one defect of one of
:data:`DEFECT_TYPES` on a crop and returns its pixel mask.

The seven types differ in size, contrast and shape, from obvious to barely visible, like
the defects of real inspection data:

=========  ===============================================================
crack      a jagged, branching dark line, 2-3.5 px wide
discolour  a 30-45 % lighter or darker region, no change of hue
hole       a dark elliptical pit with a lit rim on one side
patch      a shrunken piece of ANOTHER texture (e.g. gravel in grass), hard edges
pit        one to four dark specks of 7-12 px, close together
scratch    a thin curved line, brighter or darker than the texture
stain      a smooth, irregular, low-contrast brownish discolouration
=========  ===============================================================
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Callable

import numpy as np
from PIL import Image
from scipy import ndimage

from ..config import BGADError

#: The textures of the embedded data set (``skimage.data`` images).
TEXTURES = ("grass", "brick", "gravel")

#: The synthetic defect types, sorted.
DEFECT_TYPES = ("crack", "discolour", "hole", "patch", "pit", "scratch", "stain")

TEXTURE_SIDE = 512  # px, the side of every skimage texture


# ---------------------------------------------------------------------------
# Textures and normal crops
# ---------------------------------------------------------------------------


@lru_cache(maxsize=None)
def load_texture(name: str) -> np.ndarray:
    """Return a texture as read-only float32 ``(512, 512)`` in [0, 1].

    Raises:
        BGADError: ``name`` is not one of :data:`TEXTURES`.
    """
    if name not in TEXTURES:
        raise BGADError(f"unknown texture {name!r}; choose one of {list(TEXTURES)}.")
    import skimage.data  # imported here: it is slow to import and only needed for the textures

    texture = getattr(skimage.data, name)().astype(np.float32) / 255.0
    texture.setflags(write=False)
    return texture


def normal_crop(texture: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random normal image: float32 ``(size, size, 3)`` grey RGB in [0, 1].

    A ``size`` x ``size`` crop at a random place, rotated by a random
    multiple of 90 degrees, mirrored with probability 1/2, and with contrast
    and brightness jittered by up to +-5%.
    """
    source = load_texture(texture)
    top = int(rng.integers(0, TEXTURE_SIDE - size + 1))
    left = int(rng.integers(0, TEXTURE_SIDE - size + 1))
    crop = np.rot90(source[top : top + size, left : left + size], k=int(rng.integers(4)))
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    contrast = rng.uniform(0.95, 1.05)
    brightness = rng.uniform(-0.05, 0.05)
    mean = float(crop.mean())
    grey = np.clip((crop - mean) * contrast + mean + brightness, 0.0, 1.0)
    return np.repeat(grey[..., None], 3, axis=2).astype(np.float32)


# ---------------------------------------------------------------------------
# Defects. Each takes a float32 (S, S, 3) image and returns (image, mask);
# ``scale`` is size / 256, so defects keep their relative size.
# ---------------------------------------------------------------------------


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(y, x)``, each float32 ``(size, size)``."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return yy, xx


def _random_centre(rng: np.random.Generator, size: int, margin: float) -> tuple[float, float]:
    """A random point at least ``margin`` pixels from every border (if possible)."""
    margin = min(margin, size / 2 - 1)
    return float(rng.uniform(margin, size - margin)), float(rng.uniform(margin, size - margin))


def _scratch(image: np.ndarray, rng: np.random.Generator, scale: float, host: str) -> tuple[np.ndarray, np.ndarray]:
    """A thin curved line (cubic Bezier), lighter or darker than the texture."""
    size = image.shape[0]
    length = rng.uniform(50.0, 120.0) * scale
    cy, cx = _random_centre(rng, size, length / 2 + 2)
    angle = rng.uniform(0.0, math.pi)
    direction = np.array([math.sin(angle), math.cos(angle)])
    normal = np.array([direction[1], -direction[0]])
    centre = np.array([cy, cx])
    p0 = centre - direction * length / 2
    p3 = centre + direction * length / 2
    p1 = centre - direction * length / 6 + normal * rng.normal(0.0, length * 0.3)
    p2 = centre + direction * length / 6 + normal * rng.normal(0.0, length * 0.3)
    t = np.linspace(0.0, 1.0, int(length * 4) + 2)[:, None]
    curve = (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t**2 * p2 + t**3 * p3
    rows = np.clip(np.round(curve[:, 0]).astype(int), 0, size - 1)
    cols = np.clip(np.round(curve[:, 1]).astype(int), 0, size - 1)
    line = np.zeros((size, size), dtype=bool)
    line[rows, cols] = True

    distance = ndimage.distance_transform_edt(~line)
    half_width = max(0.75, rng.uniform(1.0, 2.5) * scale)  # 2-5 px wide at 256
    alpha = np.clip(half_width + 0.5 - distance, 0.0, 1.0).astype(np.float32)
    target = rng.uniform(0.85, 1.0) if rng.random() < 0.5 else rng.uniform(0.0, 0.12)
    strength = rng.uniform(0.7, 0.95)
    weight = (alpha * strength)[..., None]
    out = image * (1 - weight) + target * weight
    mask = distance <= half_width + 1.0  # the line, dilated by one pixel
    return out.astype(np.float32), mask


def _hole(image: np.ndarray, rng: np.random.Generator, scale: float, host: str) -> tuple[np.ndarray, np.ndarray]:
    """A dark elliptical pit with a soft rim, lit from one side."""
    size = image.shape[0]
    a = max(2.5, rng.uniform(10.0, 26.0) * scale)
    b = a * rng.uniform(0.6, 1.0)
    cy, cx = _random_centre(rng, size, a * 1.3 + 2)
    theta = rng.uniform(0.0, math.pi)
    yy, xx = _grid(size)
    u = (xx - cx) * math.cos(theta) + (yy - cy) * math.sin(theta)
    v = -(xx - cx) * math.sin(theta) + (yy - cy) * math.cos(theta)
    rho = np.sqrt((u / a) ** 2 + (v / b) ** 2)

    # alpha: 1 inside (rho < 0.75), fading to 0 at rho = 1.15: the soft rim.
    alpha = np.clip((1.15 - rho) / 0.4, 0.0, 1.0)
    alpha = alpha * alpha * (3 - 2 * alpha)  # smoothstep
    grey = image[..., 0]
    dark = rng.uniform(0.03, 0.12) + 0.2 * grey
    # The far wall catches the light: a bright crescent on one side of the rim.
    light = rng.uniform(0.0, 2 * math.pi)
    facing = ((xx - cx) * math.cos(light) + (yy - cy) * math.sin(light)) / np.maximum(
        np.hypot(xx - cx, yy - cy), 1e-6
    )
    rim = np.exp(-(((rho - 0.85) / 0.12) ** 2)) * np.clip(facing, 0.0, 1.0) * rng.uniform(0.15, 0.3)
    new_grey = np.clip(grey * (1 - alpha) + dark * alpha + rim, 0.0, 1.0)
    out = image + (new_grey - grey)[..., None]
    return np.clip(out, 0.0, 1.0).astype(np.float32), rho <= 1.0


_STAIN_COLOURS = np.array(
    [
        [0.58, 0.40, 0.22],  # brown
        [0.62, 0.33, 0.18],  # rust
        [0.60, 0.52, 0.26],  # ochre
    ],
    dtype=np.float32,
)


def _blob(rng: np.random.Generator, size: int, radius: float) -> np.ndarray:
    """A smooth irregular region around a random centre: its soft strength map in [0, 1], (size, size)."""
    cy, cx = _random_centre(rng, size, radius * 1.2 + 2)
    yy, xx = _grid(size)
    envelope = np.exp(-(((yy - cy) ** 2 + (xx - cx) ** 2) / radius**2))
    noise = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma=max(1.0, radius / 3))
    noise /= noise.std() + 1e-8
    shape = envelope * (1.0 + 0.6 * noise) > 0.4  # an irregular blob around the centre
    return ndimage.gaussian_filter(shape.astype(np.float32), sigma=max(1.0, radius / 6))


def _stain(image: np.ndarray, rng: np.random.Generator, scale: float, host: str) -> tuple[np.ndarray, np.ndarray]:
    """A smooth low-contrast brownish blob with an irregular outline."""
    size = image.shape[0]
    radius = max(4.0, rng.uniform(10.0, 30.0) * scale)
    strength = _blob(rng, size, radius)

    colour = _STAIN_COLOURS[rng.integers(len(_STAIN_COLOURS))] * rng.uniform(0.9, 1.1, size=3)
    colour = (colour / colour.mean()).astype(np.float32)  # a tint that keeps the brightness
    darken = rng.uniform(0.8, 0.95)
    tinted = image * colour * darken
    weight = (strength * rng.uniform(0.45, 0.75))[..., None]
    out = image * (1 - weight) + tinted * weight
    return np.clip(out, 0.0, 1.0).astype(np.float32), strength > 0.3


def _patch(image: np.ndarray, rng: np.random.Generator, scale: float, host: str) -> tuple[np.ndarray, np.ndarray]:
    """A rotated rectangle or ellipse cut from another texture, shrunk, with a thin seam."""
    size = image.shape[0]
    others = [t for t in TEXTURES if t != host]
    foreign_name = others[int(rng.integers(len(others)))]
    height, width = np.maximum(rng.uniform(26.0, 56.0, size=2) * scale, 4.0)
    side = min(size, int(math.ceil(math.hypot(height, width))) + 2)
    top = int(rng.integers(0, size - side + 1))
    left = int(rng.integers(0, size - side + 1))

    # The shape, in the coordinates of the side x side window.
    yy, xx = _grid(side)
    centre = (side - 1) / 2
    theta = rng.uniform(0.0, math.pi)
    u = (xx - centre) * math.cos(theta) + (yy - centre) * math.sin(theta)
    v = -(xx - centre) * math.sin(theta) + (yy - centre) * math.cos(theta)
    if rng.random() < 0.5:
        shape = (np.abs(u) <= width / 2) & (np.abs(v) <= height / 2)
    else:
        shape = (u / (width / 2)) ** 2 + (v / (height / 2)) ** 2 <= 1.0

    # The foreign texture, shrunk by a random factor so its grain differs from the host's.
    zoom = rng.uniform(0.45, 0.7)
    source_side = min(TEXTURE_SIDE, int(math.ceil(side / zoom)))
    source = load_texture(foreign_name)
    sy = int(rng.integers(0, TEXTURE_SIDE - source_side + 1))
    sx = int(rng.integers(0, TEXTURE_SIDE - source_side + 1))
    piece = np.rot90(source[sy : sy + source_side, sx : sx + source_side], k=int(rng.integers(4)))
    piece = np.ascontiguousarray(piece, dtype=np.float32)
    foreign = np.asarray(Image.fromarray(piece).resize((side, side), Image.Resampling.BILINEAR))

    host_grey = image[top : top + side, left : left + side, 0]
    if shape.any():  # same mean brightness as the covered area: the texture, not the grey level, differs
        mean = foreign[shape].mean()
        foreign = (foreign - mean) * rng.uniform(1.1, 1.4) + host_grey[shape].mean()
    seam = shape & ~ndimage.binary_erosion(shape)  # the cut edge, one pixel wide
    foreign = np.where(seam, foreign * rng.uniform(0.7, 0.85), foreign)

    new_grey = np.where(shape, np.clip(foreign, 0.0, 1.0), host_grey)
    out = image.copy()
    out[top : top + side, left : left + side] += (new_grey - host_grey)[..., None]
    mask = np.zeros((size, size), dtype=bool)
    mask[top : top + side, left : left + side] = shape
    return np.clip(out, 0.0, 1.0).astype(np.float32), mask


def _crack(image: np.ndarray, rng: np.random.Generator, scale: float, host: str) -> tuple[np.ndarray, np.ndarray]:
    """A hairline crack: a jagged random walk with a side branch, 2–3.5 px wide, dark."""
    size = image.shape[0]
    length = rng.uniform(60.0, 120.0) * scale
    cy, cx = _random_centre(rng, size, length / 2 + 2)
    line = np.zeros((size, size), dtype=bool)

    def walk(y: float, x: float, angle: float, steps: int) -> list[tuple[float, float]]:
        points = []
        for _ in range(steps):
            angle += rng.normal(0.0, 0.2)  # jagged, unlike the smooth scratch
            y, x = y + math.sin(angle), x + math.cos(angle)
            points.append((y, x))
        return points

    angle = rng.uniform(0.0, 2 * math.pi)
    half = int(length / 2)
    trunk = walk(cy, cx, angle, half)[::-1] + walk(cy, cx, angle + math.pi, half)
    by, bx = trunk[int(rng.integers(len(trunk) // 4, 3 * len(trunk) // 4))]
    branch = walk(by, bx, angle + rng.choice([-1, 1]) * rng.uniform(0.5, 1.2), int(length * rng.uniform(0.2, 0.4)))
    for y, x in trunk + branch:
        line[int(np.clip(round(y), 0, size - 1)), int(np.clip(round(x), 0, size - 1))] = True
    distance = ndimage.distance_transform_edt(~line)
    half_width = max(0.75, rng.uniform(1.0, 1.75) * scale)  # 2–3.5 px wide at 256
    alpha = np.clip(half_width + 0.5 - distance, 0.0, 1.0).astype(np.float32)
    darken = rng.uniform(0.1, 0.3)  # the crack keeps 10–30 % of the brightness
    out = image * (1 - alpha[..., None] * (1 - darken))
    return out.astype(np.float32), distance <= half_width + 1.0


def _pit(image: np.ndarray, rng: np.random.Generator, scale: float, host: str) -> tuple[np.ndarray, np.ndarray]:
    """A few small dark pits close together, each 7–12 px across at 256 px (like pitting on a ball screw)."""
    size = image.shape[0]
    spread = rng.uniform(6.0, 14.0) * scale
    cy, cx = _random_centre(rng, size, spread + 8 * scale + 2)
    yy, xx = _grid(size)
    alpha = np.zeros((size, size), dtype=np.float32)
    for _ in range(int(rng.integers(1, 5))):
        py, px = cy + rng.normal(0.0, spread / 2), cx + rng.normal(0.0, spread / 2)
        r = max(1.5, rng.uniform(3.5, 6.0) * scale)
        d = np.sqrt((yy - py) ** 2 + (xx - px) ** 2) / r
        alpha = np.maximum(alpha, np.clip(1.3 - d, 0.0, 1.0))
    grey = image[..., 0]
    dark = rng.uniform(0.05, 0.2) + 0.3 * grey
    new_grey = grey * (1 - alpha) + dark * alpha
    out = image + (new_grey - grey)[..., None]
    return np.clip(out, 0.0, 1.0).astype(np.float32), alpha > 0.3


def _discolour(image: np.ndarray, rng: np.random.Generator, scale: float, host: str) -> tuple[np.ndarray, np.ndarray]:
    """A faint grey-level change (30–45 % lighter or darker) over a smooth irregular region; no hue."""
    size = image.shape[0]
    radius = max(4.0, rng.uniform(14.0, 32.0) * scale)
    strength = _blob(rng, size, radius)
    factor = rng.uniform(1.3, 1.45) if rng.random() < 0.5 else rng.uniform(0.55, 0.7)
    out = image * (1 + (factor - 1) * strength[..., None])
    return np.clip(out, 0.0, 1.0).astype(np.float32), strength > 0.3


_DEFECTS: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
    "crack": _crack,
    "discolour": _discolour,
    "pit": _pit,
    "hole": _hole,
    "patch": _patch,
    "scratch": _scratch,
    "stain": _stain,
}


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float image in [0, 1] -> uint8 (rounded), as written to PNG."""
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def add_defect(
    image: np.ndarray, defect_type: str, rng: np.random.Generator, host: str = "grass"
) -> tuple[np.ndarray, np.ndarray]:
    """Add one defect to a float32 ``(S, S, 3)`` image; return ``(image, mask)``.

    ``host`` is the image's texture (a ``patch`` is cut from another one).
    The input is not modified. The mask is non-empty and, after rounding to
    8 bits, at least a quarter of its pixels differ from the input.

    Raises:
        BGADError: unknown ``defect_type`` or ``host``.
    """
    if defect_type not in _DEFECTS:
        raise BGADError(f"unknown defect type {defect_type!r}; choose one of {list(DEFECT_TYPES)}.")
    if host not in TEXTURES:
        raise BGADError(f"unknown texture {host!r}; choose one of {list(TEXTURES)}.")
    size = image.shape[0]
    before = to_uint8(image)
    for _ in range(50):  # a draw can (rarely) be too faint after rounding; draw again
        out, mask = _DEFECTS[defect_type](image, rng, size / 256.0, host)
        changed = np.any(to_uint8(out) != before, axis=-1)
        if mask.sum() >= 4 and changed[mask].mean() >= 0.25:
            return out, mask
    raise RuntimeError(f"could not draw a visible {defect_type!r} defect on a {size}x{size} image")
