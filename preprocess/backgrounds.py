"""Backgrounds and non-face distractors for synthetic images (no face is ever drawn here).

Used by ``preprocess.synthetic`` behind its faces and by ``preprocess.negatives`` for
face-free images. Every function takes a numpy Generator and is a pure function of it.
"""

import math
from typing import Tuple

import numpy as np
from PIL import Image, ImageDraw

SKIN_TONES = np.array([[255, 224, 196], [241, 194, 125], [224, 172, 105], [198, 134, 66],
                       [141, 85, 36], [92, 56, 33], [255, 205, 178], [234, 192, 134],
                       [170, 120, 90], [60, 40, 30]], np.float64)  # RGB, light to dark


def colour(rng, base, jitter=12.0) -> Tuple[int, int, int]:
    """``base`` RGB plus Gaussian jitter, clipped to 0..255."""
    c = np.clip(np.asarray(base, np.float64) + rng.normal(0, jitter, 3), 0, 255)
    return tuple(int(v) for v in c)


def random_colour(rng) -> Tuple[int, int, int]:
    """A uniformly random RGB colour."""
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def noise_background(rng, height: int, width: int) -> np.ndarray:
    """Uniform RGB noise, as the seed project's negatives: uint8 [H, W, 3]."""
    # rng.bytes is ~10x faster than rng.integers for this many bytes.
    return np.frombuffer(rng.bytes(height * width * 3), np.uint8).reshape(height, width, 3)


def _colorize(rng, t: np.ndarray, height: int, width: int, resample) -> np.ndarray:
    """Maps a uint8 [h, w] ramp onto two random colours at full size, via a 256-entry LUT."""
    ramp = Image.fromarray(t, 'L')
    if ramp.size != (width, height):
        ramp = ramp.resize((width, height), resample)
    c0 = np.asarray(random_colour(rng), np.float32)
    c1 = np.asarray(random_colour(rng), np.float32)
    lut = (c0 + np.linspace(0.0, 1.0, 256, dtype=np.float32)[:, None] * (c1 - c0)).astype(np.uint8)
    # An RGB image's point() takes one 256-entry table per channel, concatenated.
    return np.asarray(ramp.convert('RGB').point(lut.T.ravel().tolist()))


def gradient_background(rng, height: int, width: int) -> np.ndarray:
    """A linear gradient between two random colours in a random direction: uint8 [H, W, 3]."""
    angle = rng.uniform(0, 2 * math.pi)
    # A linear ramp survives bilinear upscaling exactly, so compute it on a coarse grid.
    yy, xx = np.ogrid[0:height:8, 0:width:8]
    t = xx * math.cos(angle) + yy * math.sin(angle)
    t = (t - t.min()) * (255.0 / max(float(t.max() - t.min()), 1.0))
    return _colorize(rng, t.astype(np.uint8), height, width, Image.BILINEAR)


def texture_background(rng, height: int, width: int) -> np.ndarray:
    """Smooth blobs, stripes or checks: uint8 [H, W, 3]."""
    kind = rng.integers(3)
    if kind == 0:  # low-res noise upscaled: clouds, foliage, walls
        cells = int(rng.integers(3, 24))
        small = rng.integers(0, 256, (cells, cells, 3), dtype=np.uint8)
        return np.asarray(Image.fromarray(small).resize((width, height), Image.BICUBIC))
    yy, xx = np.ogrid[0:height:2, 0:width:2]  # half resolution; periods are >= 6 px
    period = rng.uniform(3, 30)
    angle = rng.uniform(0, math.pi)
    u = xx * math.cos(angle) + yy * math.sin(angle)
    if kind == 1:  # stripes
        t = 127.5 + 127.5 * np.sin(u * (2 * math.pi / period))
    else:  # checks
        v = -xx * math.sin(angle) + yy * math.cos(angle)
        t = ((np.floor(u / period) + np.floor(v / period)) % 2) * 255.0
    return _colorize(rng, t.astype(np.uint8), height, width, Image.BILINEAR)


def random_background(rng, height: int, width: int) -> np.ndarray:
    """One of: flat colour + mild noise, noise, gradient or texture: uint8 [H, W, 3]."""
    kind = rng.choice(4, p=[0.25, 0.1, 0.3, 0.35])
    if kind == 0:
        base = np.clip(np.asarray(random_colour(rng), np.uint8), 12, 243) - 12
        noise = np.frombuffer(rng.bytes(height * width), np.uint8).reshape(height, width, 1) % 25
        return noise + base.astype(np.uint8)
    if kind == 1:
        return noise_background(rng, height, width)
    if kind == 2:
        return gradient_background(rng, height, width)
    return texture_background(rng, height, width)


def draw_distractors(rng, image: Image.Image, count: int, avoid_xyxy=()) -> None:
    """Draws shapes that are not faces: rectangles, polygons, lines, ellipses, skin blobs.

    Some ellipses are skin-coloured and a few carry one or two dots, so that colour and
    outline alone do not make a face. A shape whose extent would touch one of
    ``avoid_xyxy`` (pixel boxes, e.g. labelled faces) is not drawn.
    """
    draw = ImageDraw.Draw(image)
    width, height = image.size
    side = min(width, height)
    for _ in range(count):
        size = rng.uniform(0.05, 0.6) * side
        x, y = rng.uniform(-0.1 * width, width), rng.uniform(-0.1 * height, height)
        w, h = size * rng.uniform(0.5, 1.5), size * rng.uniform(0.5, 1.5)
        kind = rng.integers(6)
        extent = [x - w - 4, y - h - 4, x + w + 4, y + h + 4] if kind == 4 else [x - 2, y - 2, x + w + 2, y + h + 2]
        if any(overlap(extent, box) > 0 for box in avoid_xyxy):
            continue
        if kind <= 1:  # plain or skin-coloured ellipse
            skin = kind == 1 or rng.random() < 0.5
            fill = colour(rng, SKIN_TONES[rng.integers(len(SKIN_TONES))], 15) if skin else random_colour(rng)
            draw.ellipse([x, y, x + w, y + h], fill=fill)
            if rng.random() < 0.4:  # a lone feature or two, never the full eye-eye-mouth layout
                r = max(1.0, 0.06 * w)
                for _ in range(int(rng.integers(1, 3))):
                    px, py = x + rng.uniform(0.2, 0.8) * w, y + rng.uniform(0.2, 0.8) * h
                    draw.ellipse([px - r, py - r, px + r, py + r], fill=random_colour(rng))
        elif kind == 2:
            draw.rectangle([x, y, x + w, y + h], fill=random_colour(rng))
        elif kind == 3:
            points = [(x + rng.uniform(0, w), y + rng.uniform(0, h)) for _ in range(int(rng.integers(3, 7)))]
            draw.polygon(points, fill=random_colour(rng))
        elif kind == 4:
            draw.line([x, y, x + rng.uniform(-w, w), y + rng.uniform(-h, h)],
                      fill=random_colour(rng), width=int(rng.integers(1, max(2, int(size / 8)))))
        else:
            draw.arc([x, y, x + w, y + h], rng.uniform(0, 360), rng.uniform(0, 360),
                     fill=random_colour(rng), width=int(rng.integers(1, 4)))


def overlap(a, b) -> float:
    """Intersection over the smaller area of two xyxy boxes."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    small = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / max(small, 1e-9)
