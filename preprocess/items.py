"""Raw dataset items and the one path that turns them into FaceRecords.

Every source reader (WIDER FACE, CelebA, FDDB, JSONL, synthetic, negatives) yields
``RawItem``s: an image (a path, or pixels already in memory) plus faces as pixel
``[x, y, w, h]`` boxes in that image. ``encode_item`` loads, repairs and validates them by
the rules below and returns a ``data.features.FaceRecord``, or raises ``SkipItem`` with a
reason that the manifest counts.

Repair rules (documented once, here):
  * EXIF orientation is applied to the pixels, and the boxes are taken to refer to the
    image as displayed (that is what every annotation tool shows its annotator).
  * Grayscale, palette, CMYK, RGBA (alpha composited on white) and 16-bit images are
    converted to 8-bit RGB.
  * A box partly outside the image is clipped to it; a box with no area left inside the
    image, or with width or height <= 0, is dropped and counted as ``box_outside`` /
    ``box_empty`` (the image itself is kept).
  * Images larger than ``max_side`` on their long side are downscaled (boxes are
    normalized, so they need no change).
  * A missing file, an unreadable/truncated image: the item is skipped
    (``missing_file`` / ``corrupt_image``), with a message naming the file and the problem
    ("not an image (0 bytes)", "truncated JPEG (...)"), never a Python object repr.
  * An image of more than ``max_pixels`` (width x height, read from its header before any
    decoding) is skipped (``image_too_large``). This check replaces PIL's decompression-bomb
    check (which warns above 89.5 MP, refuses above 179 MP with a message that names no
    file, and caps what a caller may allow): ``DEFAULT_MAX_PIXELS`` is PIL's refusal limit,
    so every image PIL accepted before is still accepted.
"""

import dataclasses
import io
import re
from typing import Optional

import numpy as np
from PIL import Image, ImageOps

from data import boxes as box_lib
from data.features import FaceRecord, encode_jpeg
from preprocess import files


# File endings read as images when a folder is scanned (detect.py, folder negatives).
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp', '.tif', '.tiff')

# PIL's own refusal limit (2 x Image.MAX_IMAGE_PIXELS, about 179 MP). load_rgb checks its
# max_pixels itself, naming the file, so PIL's check is turned off (all of facedet's image
# reading goes through load_rgb).
DEFAULT_MAX_PIXELS = 178_956_970
Image.MAX_IMAGE_PIXELS = None

# '<_io.BytesIO object at 0x7f...>' and the like, which PIL puts in some of its messages.
_OBJECT_REPR = re.compile(r'<[^<>]* at 0x[0-9a-fA-F]+>')


class LayoutError(ValueError):
    """A dataset's annotation file is not what its reader expects (a download-quota page
    saved under its name, another dataset's table): make_records says so in one line."""


class SkipItem(Exception):
    """An item that cannot be written. ``reason`` is a short key counted in the manifest."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f'{reason}: {detail}')
        self.reason = reason
        self.detail = detail

    def __reduce__(self):  # pickles (to workers) with both arguments, not the joined message
        return SkipItem, (self.reason, self.detail)


@dataclasses.dataclass
class RawItem:
    """One image and its faces as a source reader found them.

    Attributes:
      source_id: stable unique name, e.g. 'wider/0--Parade/0_Parade_marchingband_1_5.jpg'.
      path: image file, or None when ``pixels`` is given.
      boxes_xywh: [N, 4] pixel boxes in the image as displayed.
      landmarks_xy: optional [N, 5, 2] pixel (x, y) points; NaN rows mean "not labelled".
      ignore: optional [N] bool.
      split: 'train', 'val' or 'test'.
      pixels: optional RGB uint8 [H, W, 3] (synthetic sources).
      origin: where the annotation came from, for messages ('file.txt:123').
      attributes: optional dict of extra per-face labels kept for analysis, each an [N]
        array (e.g. WIDER's 'blur', 'occlusion', ...); encode_item does not use them.
    """
    source_id: str
    path: Optional[str]
    boxes_xywh: np.ndarray
    landmarks_xy: Optional[np.ndarray] = None
    ignore: Optional[np.ndarray] = None
    split: str = 'train'
    pixels: Optional[np.ndarray] = None
    origin: str = ''
    attributes: Optional[dict] = None


def load_rgb(path: str, max_pixels: float = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Reads an image file as displayed (EXIF applied) into uint8 RGB. Raises SkipItem
    (missing_file, corrupt_image, image_too_large) with a message naming the file."""
    if not files.exists(path):
        raise SkipItem('missing_file', f'{path}: no such file')
    image = open_lazily(path, max_pixels)
    try:
        image.load()  # forces a full decode so truncated files fail here
        image = ImageOps.exif_transpose(image)
    except Exception as e:  # PIL raises many types for bad files
        raise SkipItem('corrupt_image', f'{path}: {_decode_problem(e, image.format)}') from None
    return to_rgb_array(image)


def open_lazily(path: str, max_pixels: float = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Opens an image file, reading only its header; raises SkipItem for a file that is not
    an image, or one of more than max_pixels (checked before anything is decoded)."""
    try:
        data = files.read_bytes(path)
    except Exception as e:  # tf.io.gfile raises its own error types
        raise SkipItem('corrupt_image',
                       f'{path}: cannot read the file ({type(e).__name__})') from None
    if not data:
        raise SkipItem('corrupt_image', f'{path}: not an image (0 bytes)')
    try:
        image = Image.open(io.BytesIO(data))
    except Exception:  # UnidentifiedImageError, or a header PIL cannot parse
        raise SkipItem('corrupt_image',
                       f'{path}: not an image ({len(data)} bytes in no format PIL reads)') from None
    width, height = image.size
    if width * height > max_pixels:
        raise SkipItem('image_too_large',
                       f'{path}: {width}x{height} = {width * height / 1e6:.0f} MP is over '
                       f'max_pixels={max_pixels:.0f} ({max_pixels / 1e6:.0f} MP)')
    return image


def _decode_problem(error: Exception, image_format: Optional[str]) -> str:
    """A short message for a decoding error: 'truncated JPEG (...)', 'unreadable PNG: ...'."""
    text = _OBJECT_REPR.sub('the file', str(error))
    if text.startswith('image file is truncated'):
        detail = text[len('image file is truncated'):].strip()
        return f'truncated {image_format or "image"}{f" {detail}" if detail else ""}'
    return f'unreadable {image_format or "image"}: {type(error).__name__}: {text}'


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """Converts any PIL mode (L, P, CMYK, RGBA, I;16, ...) to uint8 RGB."""
    if image.mode in ('I;16', 'I;16B', 'I;16L', 'I'):
        arr = np.asarray(image, np.float64)
        hi = arr.max() if arr.size else 1.0
        arr = arr / (65535.0 if hi > 255 else 255.0) * 255.0
        image = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), 'L')
    if image.mode in ('RGBA', 'LA') or (image.mode == 'P' and 'transparency' in image.info):
        rgba = image.convert('RGBA')
        background = Image.new('RGBA', rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return np.asarray(image.convert('RGB'), np.uint8)


def encode_item(item: RawItem, max_side: int = 0, jpeg_quality: int = 90):
    """Loads and validates a RawItem.

    Returns:
      (record, dropped): a FaceRecord and a dict {reason: count} of boxes dropped by the
      repair rules.
    Raises:
      SkipItem: when the image itself cannot be used.
    """
    pixels, record, dropped = load_item(item, max_side)
    return with_jpeg(record, pixels, jpeg_quality), dropped


def with_jpeg(record: FaceRecord, pixels: np.ndarray, jpeg_quality: int = 90) -> FaceRecord:
    """``record`` holding ``pixels`` as its JPEG."""
    return dataclasses.replace(record, encoded=encode_jpeg(pixels, jpeg_quality))


def load_item(item: RawItem, max_side: int = 0):
    """encode_item without the JPEG: (pixels as they will be stored, a FaceRecord with no
    ``encoded`` bytes yet, dropped). A step in between (the landmark teacher) sees the
    stored image. Raises SkipItem."""
    pixels = item.pixels if item.pixels is not None else load_rgb(item.path)
    height, width = pixels.shape[:2]
    if height < 2 or width < 2:
        raise SkipItem('corrupt_image', f'{item.path or item.source_id}: {width}x{height} image')
    b = np.asarray(item.boxes_xywh, np.float64).reshape(-1, 4)
    n = len(b)
    lm = item.landmarks_xy
    lm = np.full([n, 5, 2], np.nan) if lm is None else np.asarray(lm, np.float64).reshape(n, 5, 2)
    ignore = np.zeros([n], bool) if item.ignore is None else np.asarray(item.ignore, bool).reshape(n)

    dropped = {}
    finite = np.all(np.isfinite(b), axis=1)
    empty = finite & ((b[:, 2] <= 0) | (b[:, 3] <= 0))
    x0 = np.clip(b[:, 0], 0, width)
    y0 = np.clip(b[:, 1], 0, height)
    x1 = np.clip(b[:, 0] + b[:, 2], 0, width)
    y1 = np.clip(b[:, 1] + b[:, 3], 0, height)
    outside = finite & ~empty & ((x1 - x0 <= 0) | (y1 - y0 <= 0))
    keep = finite & ~empty & ~outside
    for reason, mask in (('box_not_finite', ~finite), ('box_empty', empty), ('box_outside', outside)):
        if mask.any():
            dropped[reason] = int(mask.sum())

    clipped = np.stack([x0, y0, x1 - x0, y1 - y0], axis=1)[keep]
    lm = lm[keep]
    valid = np.all(np.isfinite(lm.reshape(-1, 10)), axis=1)
    lm = np.where(np.isfinite(lm), lm, 0.0)

    if max_side and max(height, width) > max_side:
        scale = max_side / max(height, width)
        new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
        pixels = np.asarray(Image.fromarray(pixels).resize(new_size, Image.BILINEAR))
    record = FaceRecord(
        source_id=item.source_id,
        encoded=b'',
        height=pixels.shape[0], width=pixels.shape[1],
        # Normalized against the size the boxes were given in; resizing keeps them valid.
        boxes=box_lib.xywh_to_normalized(clipped, height, width),
        landmarks=box_lib.landmarks_xy_to_normalized(lm, height, width) * valid[:, None],
        landmarks_valid=valid.astype(np.int64),
        ignore=ignore[keep].astype(np.int64))
    return pixels, record, dropped
