"""Degraded copies of validation photos, for robustness validation (numpy and PIL; no TF, no OpenCV).

Each variant turns one photo and its faces into another photo and its faces:
``apply(name, rgb, boxes, ignore, source_id) -> Variant`` or None when the variant leaves
that photo out. ``rgb`` is uint8 [H, W, 3]; ``boxes`` [N, 4] float32 normalized yxyx of that
photo (the records' convention); ``ignore`` [N] bool. Every variant is deterministic: the
only random choice (``large``'s crop) is seeded by a hash of ``source_id``, so a number
measured twice is the same number.

| variant | what it does | parameters |
|---|---|---|
| ``grey`` | luma (BT.601: 0.299 R + 0.587 G + 0.114 B, rounded) in all 3 channels | |
| ``blur`` | Gaussian blur (PIL's, edges extended) | sigma = max(1, 0.0025 x long side) px: 2.6 px on a 1024-px photo |
| ``jpeg`` | JPEG re-encode (PIL, 4:2:0) and decode; same size | quality 15 |
| ``large`` | square crop around the largest counted face, resized to 640 px | see below |
| ``low_contrast`` | an old scan: contrast 0.4 about mid-grey, then gamma 1.5 (darker) | v' = (0.5 + 0.4 (v - 0.5)) ** 1.5, v in [0, 1] |

``large``: the largest face not ignored (side = max(width, height) in pixels) must be at
least ``LARGE_MIN_FACE`` (48 px), otherwise the photo is left out. The crop's side is the
face's side over a fraction drawn in [0.4, 0.6]; when the photo's short side is too small
for that, the fraction is raised to face side / short side, and the photo is left out when
that passes 0.6. The crop's position is drawn among those that hold the whole face. Faces
wholly outside the crop are dropped; faces cut by its border (any part outside) are kept,
clipped, and marked ignore. The crop is resized to ``LARGE_SIDE`` (640 px, area filter
when shrinking, bilinear when enlarging), so faces are 256-384 px: large in pixels as well
as in the frame.
"""

import dataclasses
import hashlib
import io
from typing import Optional

import numpy as np
from PIL import Image
from PIL import ImageFilter

NAMES = ('grey', 'blur', 'jpeg', 'large', 'low_contrast')
LUMA = (0.299, 0.587, 0.114)
BLUR_SIGMA_PER_SIDE = 0.0025   # sigma in px per px of the long side
BLUR_MIN_SIGMA = 1.0
JPEG_QUALITY = 15
LARGE_FRACTION = (0.4, 0.6)    # face side / crop side
LARGE_MIN_FACE = 48            # px of the source photo
LARGE_SIDE = 640               # px of the resized crop
CONTRAST, GAMMA = 0.4, 1.5


@dataclasses.dataclass
class Variant:
    """A photo: rgb uint8 [H, W, 3], boxes [N, 4] normalized yxyx of it, ignore [N]."""
    rgb: np.ndarray
    boxes: np.ndarray
    ignore: np.ndarray
    source_id: str = ''


def parse_names(names):
    """The variant names of a flag's list, checked; raises ValueError naming an unknown one."""
    names = tuple(n.strip() for n in names if n.strip())
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        raise ValueError(f'unknown variant {unknown[0]}; known: {", ".join(NAMES)}')
    if len(set(names)) != len(names):
        raise ValueError(f'a variant is named twice in {",".join(names)}')
    return names


def apply(name, rgb, boxes, ignore, source_id) -> Optional[Variant]:
    """The variant `name` of one photo (module table), or None when it leaves the photo out."""
    rgb = np.asarray(rgb, np.uint8)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    ignore = np.asarray(ignore, bool).reshape(-1)
    if name == 'large':
        return large(rgb, boxes, ignore, source_id)
    pixels = {'grey': grey, 'blur': blur, 'jpeg': jpeg, 'low_contrast': low_contrast}[name]
    return Variant(pixels(rgb), boxes, ignore)


def grey(rgb):
    """BT.601 luma, rounded, in all three channels."""
    luma = np.rint(rgb.astype(np.float32) @ np.asarray(LUMA, np.float32))
    return np.repeat(np.clip(luma, 0, 255).astype(np.uint8)[..., None], 3, axis=-1)


def blur(rgb):
    """Gaussian blur with sigma scaled to the photo's long side."""
    sigma = max(BLUR_MIN_SIGMA, BLUR_SIGMA_PER_SIDE * max(rgb.shape[:2]))
    return np.asarray(Image.fromarray(rgb).filter(ImageFilter.GaussianBlur(radius=sigma)))


def jpeg(rgb):
    """The photo re-encoded as JPEG at JPEG_QUALITY and decoded."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, 'JPEG', quality=JPEG_QUALITY)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert('RGB'))


def low_contrast(rgb):
    """Contrast CONTRAST about mid-grey, then gamma GAMMA (a faded, dark scan)."""
    v = rgb.astype(np.float32) / 255.0
    v = (0.5 + CONTRAST * (v - 0.5)) ** GAMMA
    return np.clip(np.rint(v * 255.0), 0, 255).astype(np.uint8)


def rng_for(source_id):
    """A generator seeded by sha256(source_id): the same photo gets the same draws."""
    if isinstance(source_id, bytes):
        source_id = source_id.decode('utf-8', 'replace')
    digest = hashlib.sha256(str(source_id).encode('utf-8')).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], 'little'))


def large(rgb, boxes, ignore, source_id) -> Optional[Variant]:
    """A square crop around the largest counted face (module docstring), or None."""
    h, w = rgb.shape[:2]
    px = boxes * np.asarray([h, w, h, w], np.float32)
    sides = np.maximum(px[:, 2] - px[:, 0], px[:, 3] - px[:, 1])
    sides = np.where(ignore, 0.0, sides)
    if not len(sides) or sides.max() < LARGE_MIN_FACE:
        return None
    face = px[int(np.argmax(sides))]
    side = float(sides.max())
    rng = rng_for(source_id)
    fraction = max(rng.uniform(*LARGE_FRACTION), side / min(h, w))
    if fraction > LARGE_FRACTION[1]:
        return None
    crop = min(int(np.ceil(side / fraction)), h, w)
    y0 = _origin(rng, face[0], face[2], crop, h)
    x0 = _origin(rng, face[1], face[3], crop, w)
    pixels = rgb[y0:y0 + crop, x0:x0 + crop]
    resample = Image.Resampling.BOX if crop > LARGE_SIDE else Image.Resampling.BILINEAR
    pixels = np.asarray(Image.fromarray(np.ascontiguousarray(pixels)).resize(
        (LARGE_SIDE, LARGE_SIDE), resample=resample))
    new_boxes, new_ignore = _crop_faces(px, ignore, y0, x0, crop)
    return Variant(pixels, new_boxes, new_ignore)


def _origin(rng, low, high, crop, limit):
    """A crop start (int px) that keeps [low, high] inside the crop and the crop inside the photo."""
    first = max(0, int(np.ceil(high)) - crop)
    last = min(limit - crop, int(np.floor(low)))
    return int(rng.integers(first, max(first, last) + 1))


def _crop_faces(px, ignore, y0, x0, crop):
    """Faces of pixel yxyx boxes in the crop: normalized, clipped; cut ones ignored."""
    shifted = px - np.asarray([y0, x0, y0, x0], np.float32)
    clipped = np.clip(shifted, 0.0, float(crop))
    inside = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    cut = np.any(np.abs(clipped - shifted) > 0.5, axis=1)
    keep = inside
    return (clipped[keep] / crop).astype(np.float32), (ignore | cut)[keep]
