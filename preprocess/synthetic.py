"""Procedural photo-like images with faces: the project's embedded default dataset.

Every image is a pure function of ``(seed, split, index)``, so a dataset is reproducible,
any single image can be regenerated on its own (the shard writer does that in its workers,
see ``SyntheticSpec``), and train and val never share an image.

A face is a head ellipse (varied skin tones) with ears, hair, eyebrows, eyes, nose and
mouth, drawn on its own layer, optionally turned a little (yaw: features shift sideways)
and rotated in-plane by up to +-15 degrees. Landmarks go through the same rotation as the
pixels. Faces come at sizes from ~12 px to most of the image, some cut by the border, some
partly covered by a random shape. Backgrounds mix noise, gradients, textures and
distractors: ellipses and skin-coloured blobs without facial structure, so a detector has
to learn eyes-nose-mouth and not "skin-coloured oval"; distractors drawn in front of the
scene never cover a face.

Backgrounds and distractors come from ``preprocess.backgrounds``.

Labels, in pixels of the image (RawItem conventions):
  * box ``[x, y, w, h]``: the head ellipse's axis-aligned extent (forehead to chin,
    roughly ear to ear, like WIDER FACE), clipped to the image;
  * 5 landmarks ``(x, y)``: left eye (smaller x in a frontal face), right eye, nose tip,
    left and right mouth corner; NaN (not labelled) when a point falls outside the image;
  * ``ignore``: faces less than half visible (border or occluder) or under 8 px.
"""

import dataclasses
import math
import zlib
from typing import Iterator, List, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from preprocess import backgrounds
from preprocess.items import RawItem

SOURCE = 'synthetic'
MAX_FACES = 8
MIN_FACE_PX = 12
_MIN_VISIBLE = 0.5      # faces less visible than this (border, occluder) are marked ignore
_MIN_LABELLED_PX = 8    # faces smaller than this after clipping are marked ignore

_HAIR = np.array([[20, 16, 14], [60, 40, 25], [110, 75, 40], [200, 160, 90],
                  [150, 60, 30], [160, 160, 160], [235, 230, 220]], np.float64)
_IRIS = np.array([[40, 25, 15], [70, 110, 150], [60, 100, 60], [25, 25, 25]], np.float64)


def _split_key(split: str) -> int:
    return zlib.crc32(split.encode('utf-8'))


def image_rng(seed: int, split: str, index: int, stream: int = 0) -> np.random.Generator:
    """The random stream of one image: independent of every other image and split."""
    return np.random.default_rng([int(seed), _split_key(split), int(index), int(stream)])


# ---- faces ----

def rotate_points(points_xy: np.ndarray, centre_xy, angle_deg: float) -> np.ndarray:
    """Rotates [..., 2] pixel (x, y) points about ``centre_xy`` as ``PIL.Image.rotate(angle)``.

    PIL turns the picture counter-clockwise as displayed (y pointing down), so a point
    right of the centre moves up for a positive angle.
    """
    a = math.radians(angle_deg)
    c, s = math.cos(a), math.sin(a)
    d = np.asarray(points_xy, np.float64) - np.asarray(centre_xy, np.float64)
    x = d[..., 0] * c + d[..., 1] * s
    y = -d[..., 0] * s + d[..., 1] * c
    return np.stack([x, y], axis=-1) + np.asarray(centre_xy, np.float64)


def rotated_ellipse_extent(a: float, b: float, angle_deg: float) -> Tuple[float, float]:
    """Half width and half height of an ellipse with semi-axes (a along x, b along y) turned by angle."""
    t = math.radians(angle_deg)
    c2, s2 = math.cos(t) ** 2, math.sin(t) ** 2
    return math.sqrt(a * a * c2 + b * b * s2), math.sqrt(a * a * s2 + b * b * c2)


def draw_face_layer(rng, a: float, b: float) -> Tuple[Image.Image, np.ndarray]:
    """Draws one upright face on a transparent layer centred on the head ellipse.

    Args:
      rng: numpy Generator.
      a, b: head ellipse semi-axes in pixels (a: half width, b: half height).

    Returns:
      (layer, points): an RGBA layer whose centre is the ellipse centre, and the 5
      landmarks as [5, 2] pixel (x, y) in layer coordinates.
    """
    half_w, half_h = int(math.ceil(a * 1.35)) + 2, int(math.ceil(b * 1.3)) + 2
    layer = Image.new('RGBA', (2 * half_w, 2 * half_h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    cx, cy = float(half_w), float(half_h)
    tones = backgrounds.SKIN_TONES
    skin = backgrounds.colour(rng, tones[rng.integers(len(tones))], 10)
    shade = tuple(max(0, v - 30) for v in skin)
    hair = backgrounds.colour(rng, _HAIR[rng.integers(len(_HAIR))], 10)
    yaw = rng.uniform(-0.35, 0.35)  # shifts features sideways, as a head turned a little

    style = rng.integers(4)  # 0 bald, 1 short, 2 long, 3 hat-like block
    if style == 2:  # long hair falls behind the head
        draw.rounded_rectangle([cx - a * 1.18, cy - b * 1.12, cx + a * 1.18, cy + b * 1.05],
                               radius=a * 0.8, fill=hair)
    # ears at eye height, behind the head
    ear_w, ear_h = a * 0.22, b * 0.22
    for side in (-1, 1):
        ex = cx + side * a * (1 - 0.08) + side * ear_w * 0.3 - yaw * a * 0.2
        draw.ellipse([ex - ear_w, cy - ear_h * 0.6, ex + ear_w, cy + ear_h * 1.2], fill=shade)
    draw.ellipse([cx - a, cy - b, cx + a, cy + b], fill=skin)
    if rng.random() < 0.5:  # soft shading on one cheek
        sx = cx + rng.choice([-1, 1]) * a * 0.45
        draw.ellipse([sx - a * 0.45, cy - b * 0.2, sx + a * 0.45, cy + b * 0.7],
                     fill=tuple((np.asarray(skin) * 0.9).astype(int)))
    if style in (1, 2):  # hair cap over the top of the forehead
        draw.chord([cx - a * 1.04, cy - b * 1.1, cx + a * 1.04, cy + b * 0.1], 180, 360, fill=hair)
    elif style == 3:
        draw.rectangle([cx - a * 1.1, cy - b * 1.15, cx + a * 1.1, cy - b * 0.55],
                       fill=backgrounds.random_colour(rng))

    dx = yaw * a * 0.5  # feature shift from yaw; the nose moves most
    eye_y = cy + b * rng.uniform(-0.22, -0.08)
    eye_dx = a * rng.uniform(0.36, 0.46)
    eye_r = max(0.8, a * rng.uniform(0.11, 0.16))
    left_eye = (cx - eye_dx + dx * (1 + 0.6 * yaw), eye_y)
    right_eye = (cx + eye_dx + dx * (1 - 0.6 * yaw), eye_y)
    iris = backgrounds.colour(rng, _IRIS[rng.integers(len(_IRIS))], 8)
    brow = tuple(max(0, v - 40) for v in hair)
    for ex, ey in (left_eye, right_eye):
        draw.ellipse([ex - eye_r * 1.5, ey - eye_r, ex + eye_r * 1.5, ey + eye_r], fill=(245, 245, 240))
        draw.ellipse([ex - eye_r * 0.8, ey - eye_r * 0.8, ex + eye_r * 0.8, ey + eye_r * 0.8], fill=iris)
        pr = eye_r * 0.35
        draw.ellipse([ex - pr, ey - pr, ex + pr, ey + pr], fill=(10, 10, 10))
        by = ey - eye_r * rng.uniform(1.8, 2.6)
        draw.line([ex - eye_r * 1.6, by + eye_r * 0.3, ex, by, ex + eye_r * 1.6, by + eye_r * 0.3],
                  fill=brow, width=max(1, int(eye_r * 0.6)))
    if rng.random() < 0.15:  # glasses
        frame = backgrounds.random_colour(rng)
        for ex, ey in (left_eye, right_eye):
            draw.ellipse([ex - eye_r * 2.2, ey - eye_r * 1.7, ex + eye_r * 2.2, ey + eye_r * 1.7],
                         outline=frame, width=max(1, int(eye_r * 0.35)))

    nose = (cx + dx * 1.6, cy + b * rng.uniform(0.12, 0.25))
    nose_w = a * rng.uniform(0.12, 0.2)
    draw.polygon([(cx + dx, eye_y + eye_r), (nose[0] - nose_w, nose[1]), (nose[0] + nose_w, nose[1])],
                 fill=shade)
    mouth_y = cy + b * rng.uniform(0.45, 0.58)
    mouth_dx = a * rng.uniform(0.28, 0.4)
    left_mouth = (cx - mouth_dx + dx * 1.2, mouth_y)
    right_mouth = (cx + mouth_dx + dx * 1.2, mouth_y)
    lips = backgrounds.colour(rng, (150, 60, 60), 20)
    open_h = b * rng.uniform(0.02, 0.14)
    draw.ellipse([left_mouth[0], mouth_y - open_h, right_mouth[0], mouth_y + open_h * 1.4], fill=lips)
    if open_h > b * 0.08:
        draw.line([left_mouth, right_mouth], fill=(60, 20, 20), width=max(1, int(b * 0.025)))
    if rng.random() < 0.12:  # beard below the mouth
        draw.chord([cx - a * 0.8, cy + b * 0.1, cx + a * 0.8, cy + b * 1.0], 20, 160, fill=hair)
    points = np.array([left_eye, right_eye, nose, left_mouth, right_mouth], np.float64)
    return layer, points


@dataclasses.dataclass
class _Face:
    box_xyxy: np.ndarray   # unclipped, float pixels
    points: np.ndarray     # [5, 2]


def _place_face(rng, image: Image.Image, faces: List[_Face], max_face: float) -> None:
    """Draws one face at a free spot (or cut by the border) and appends its label."""
    width, height = image.size
    for _ in range(10):  # rejection sampling against heavy overlap with earlier faces
        fh = math.exp(rng.uniform(math.log(MIN_FACE_PX), math.log(max(MIN_FACE_PX + 1, max_face))))
        b = fh / 2
        a = b * rng.uniform(0.68, 0.85)
        angle = rng.uniform(-15, 15) if rng.random() < 0.6 else 0.0
        hw, hh = rotated_ellipse_extent(a, b, angle)
        margin = 0.35 if rng.random() < 0.15 else 0.0  # some faces cut by the border
        cx = rng.uniform(hw * (1 - 2 * margin), width - hw * (1 - 2 * margin))
        cy = rng.uniform(hh * (1 - 2 * margin), height - hh * (1 - 2 * margin))
        box = np.array([cx - hw, cy - hh, cx + hw, cy + hh])
        if all(backgrounds.overlap(box, f.box_xyxy) < 0.25 for f in faces):
            break
    else:
        return
    layer, points = draw_face_layer(rng, a, b)
    layer_centre = np.array(layer.size, np.float64) / 2
    if angle:
        layer = layer.rotate(angle, resample=Image.BILINEAR, expand=True)
    lw, lh = layer.size
    # rotate(expand=True) keeps the layer centre at the output centre; paste it at (cx, cy).
    ox, oy = int(round(cx - lw / 2)), int(round(cy - lh / 2))
    image.paste(layer, (ox, oy), layer)
    centre = np.array([ox + lw / 2, oy + lh / 2])
    points = rotate_points(points, layer_centre, angle) - layer_centre + centre
    box = box + np.tile(centre - (cx, cy), 2)
    faces.append(_Face(box, points))


def _occlude(rng, image: Image.Image, face: _Face) -> float:
    """Draws a random shape over part of a face; returns the covered fraction of its box (approx)."""
    x0, y0, x1, y1 = face.box_xyxy
    w, h = x1 - x0, y1 - y0
    side = rng.integers(4)
    cover = rng.uniform(0.2, 0.65)
    if side == 0:
        rect = [x0 - w * 0.2, y0 - h * 0.2, x0 + w * cover, y1 + h * 0.2]
    elif side == 1:
        rect = [x1 - w * cover, y0 - h * 0.2, x1 + w * 0.2, y1 + h * 0.2]
    elif side == 2:
        rect = [x0 - w * 0.2, y1 - h * cover, x1 + w * 0.2, y1 + h * 0.2]
    else:
        rect = [x0 - w * 0.2, y0 - h * 0.2, x1 + w * 0.2, y0 + h * cover]
    draw = ImageDraw.Draw(image)
    colour = backgrounds.random_colour(rng)
    if rng.random() < 0.5:
        draw.rectangle(rect, fill=colour)
    else:
        draw.ellipse(rect, fill=colour)
    return cover


def generate_image(rng, height: int, width: int, num_faces: int):
    """Draws one image.

    Args:
      rng: numpy Generator (the image is a function of its state).
      height, width: image size in pixels.
      num_faces: faces to try to place (a crowded image may hold fewer).

    Returns:
      (pixels, boxes_xywh, landmarks_xy, ignore): uint8 [H, W, 3]; [N, 4] float32 pixel
      boxes clipped to the image; [N, 5, 2] float32 pixel (x, y), NaN rows where a point
      is outside the image; [N] bool.
    """
    image = Image.fromarray(backgrounds.random_background(rng, height, width))
    backgrounds.draw_distractors(rng, image, int(rng.integers(0, 7)))
    faces: List[_Face] = []
    side = min(height, width)
    max_face = side * (0.95 if num_faces == 1 else rng.uniform(0.2, 0.6))
    for _ in range(num_faces):
        _place_face(rng, image, faces, max_face)
    visible = np.ones([len(faces)])
    for i, face in enumerate(faces):
        if rng.random() < 0.15:
            visible[i] -= _occlude(rng, image, face)
    if rng.random() < 0.5:  # distractors in front of the scene too, but never over a face
        backgrounds.draw_distractors(rng, image, int(rng.integers(1, 3)), [f.box_xyxy for f in faces])
    if rng.random() < 0.12:  # out of focus
        image = image.filter(ImageFilter.BoxBlur(1))
    pixels = np.asarray(image, np.uint8)

    n = len(faces)
    boxes = np.zeros([n, 4], np.float32)
    points = np.full([n, 5, 2], np.nan, np.float32)
    ignore = np.zeros([n], bool)
    for i, face in enumerate(faces):
        x0, y0, x1, y1 = face.box_xyxy
        cx0, cy0 = max(x0, 0.0), max(y0, 0.0)
        cx1, cy1 = min(x1, float(width)), min(y1, float(height))
        boxes[i] = [cx0, cy0, cx1 - cx0, cy1 - cy0]
        inside = (cx1 - cx0) * (cy1 - cy0) / max((x1 - x0) * (y1 - y0), 1e-9)
        ignore[i] = (inside * visible[i] < _MIN_VISIBLE) or min(cx1 - cx0, cy1 - cy0) < _MIN_LABELLED_PX
        p = face.points
        if np.all((p[:, 0] >= 0) & (p[:, 0] < width) & (p[:, 1] >= 0) & (p[:, 1] < height)):
            points[i] = p
    return pixels, boxes, points, ignore


@dataclasses.dataclass
class SyntheticSpec:
    """A synthetic image not drawn yet: cheap to pickle, drawn by ``to_raw_item``.

    The shard writer sends specs to its workers so that drawing runs in parallel and the
    main process never holds pixels.
    """
    seed: int
    split: str
    index: int
    min_side: int = 160
    max_side: int = 320
    negative_fraction: float = 0.1
    max_faces: int = MAX_FACES

    @property
    def source_id(self) -> str:
        return f'{SOURCE}/{self.split}/{self.seed}/{self.index:07d}'

    def to_raw_item(self) -> RawItem:
        rng = image_rng(self.seed, self.split, self.index)
        height = int(rng.integers(self.min_side, self.max_side + 1))
        width = int(rng.integers(self.min_side, self.max_side + 1))
        if rng.random() < self.negative_fraction:
            num_faces = 0
        else:  # mostly a few faces, sometimes a crowd
            crowd = int(rng.integers(2, 6)) if rng.random() < 0.15 else 0
            num_faces = int(min(self.max_faces, rng.geometric(0.45) + crowd))
        pixels, boxes, points, ignore = generate_image(rng, height, width, num_faces)
        return RawItem(source_id=self.source_id, path=None, boxes_xywh=boxes, landmarks_xy=points,
                       ignore=ignore, split=self.split, pixels=pixels, origin=self.source_id)


def generate_specs(num_images: int, seed: int, split: str, min_side: int = 160,
                   max_side: int = 320, negative_fraction: float = 0.1,
                   max_faces: int = MAX_FACES) -> Iterator[SyntheticSpec]:
    """Yields the specs of ``generate_items`` without drawing (see SyntheticSpec)."""
    for index in range(num_images):
        yield SyntheticSpec(seed, split, index, min_side, max_side, negative_fraction, max_faces)


def generate_items(num_images: int, seed: int, split: str, min_side: int = 160,
                   max_side: int = 320, negative_fraction: float = 0.1,
                   max_faces: int = MAX_FACES) -> Iterator[RawItem]:
    """Yields ``num_images`` synthetic RawItems with ``pixels`` set.

    Args:
      num_images: how many images.
      seed: the dataset seed; with ``split`` and the image index it fixes every pixel.
      split: 'train', 'val' or 'test' (also part of the random stream: splits never share images).
      min_side, max_side: each side is drawn uniformly from this range (pixels).
      negative_fraction: probability that an image holds no face.
      max_faces: most faces per image.

    Yields:
      RawItem with pixels uint8 [H, W, 3], boxes_xywh [N, 4], landmarks_xy [N, 5, 2]
      (NaN rows: not labelled), ignore [N] bool; N may be 0.
    """
    for spec in generate_specs(num_images, seed, split, min_side, max_side, negative_fraction, max_faces):
        yield spec.to_raw_item()
