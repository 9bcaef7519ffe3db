"""Small awkward image files for reader and encode_item tests, generated in code."""

import io
import os
import struct
import zlib

import numpy as np
from PIL import Image

EXIF_ORIENTATION = 0x0112


def rgb(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A uint8 [height, width, 3] test pattern: a gradient plus a fixed noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    img = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1),
                    np.full_like(x, 128)], axis=-1)
    return np.clip(img + rng.integers(-10, 10, img.shape), 0, 255).astype(np.uint8)


def _save(image: Image.Image, path: str, fmt: str, **kwargs) -> str:
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    image.save(path, format=fmt, **kwargs)
    return path


def write_jpeg(path: str, width: int = 64, height: int = 48, seed: int = 0) -> str:
    return _save(Image.fromarray(rgb(width, height, seed)), path, 'JPEG', quality=95)


def write_png(path: str, width: int = 64, height: int = 48, seed: int = 0) -> str:
    return _save(Image.fromarray(rgb(width, height, seed)), path, 'PNG')


def write_grayscale_jpeg(path: str, width: int = 64, height: int = 48) -> str:
    return _save(Image.fromarray(rgb(width, height)[..., 0], 'L'), path, 'JPEG')


def write_cmyk_jpeg(path: str, width: int = 64, height: int = 48) -> str:
    return _save(Image.fromarray(rgb(width, height)).convert('CMYK'), path, 'JPEG')


def write_rgba_png(path: str, width: int = 64, height: int = 48) -> str:
    """Left half opaque red, right half fully transparent (composited on white)."""
    a = np.zeros([height, width, 4], np.uint8)
    a[:, : width // 2] = (255, 0, 0, 255)
    return _save(Image.fromarray(a, 'RGBA'), path, 'PNG')


def write_16bit_png(path: str, width: int = 64, height: int = 48) -> str:
    """16-bit grayscale: value 65535 on the left half, 0 on the right."""
    a = np.zeros([height, width], np.uint16)
    a[:, : width // 2] = 65535
    return _save(Image.fromarray(a), path, 'PNG')


def write_exif_rotated_jpeg(path: str, stored_width: int = 40, stored_height: int = 24,
                            orientation: int = 6) -> str:
    """Stored pixels are stored_width x stored_height, the top-left quarter red.

    With orientation 6 a viewer rotates 90 degrees clockwise: the displayed image is
    stored_height wide and stored_width tall, and the red quarter ends up top-right.
    """
    a = np.zeros([stored_height, stored_width, 3], np.uint8)
    a[: stored_height // 2, : stored_width // 2] = (255, 0, 0)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    return _save(Image.fromarray(a), path, 'JPEG', quality=95, exif=exif.tobytes())


def write_truncated_jpeg(path: str, width: int = 64, height: int = 48) -> str:
    buf = io.BytesIO()
    Image.fromarray(rgb(width, height)).save(buf, format='JPEG', quality=95)
    data = buf.getvalue()
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    with open(path, 'wb') as f:
        f.write(data[: len(data) // 2])
    return path


def write_garbage(path: str) -> str:
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    with open(path, 'wb') as f:
        f.write(b'this is not an image')
    return path


def encode_all(stream):
    """Runs items.encode_item over a reader's output, as make_records would.

    Returns:
      (records {source_id: FaceRecord}, skips {reason: [detail, ...]},
       dropped {reason: count} of boxes dropped by the repair rules).
    """
    from preprocess import items  # pylint: disable=g-import-not-at-top
    records, skips, dropped = {}, {}, {}
    for entry in stream:
        if isinstance(entry, items.SkipItem):
            skips.setdefault(entry.reason, []).append(entry.detail)
            continue
        try:
            record, why = items.encode_item(entry)
        except items.SkipItem as e:
            skips.setdefault(e.reason, []).append(e.detail)
            continue
        for reason, count in why.items():
            dropped[reason] = dropped.get(reason, 0) + count
        records[record.source_id] = record
    return records, skips, dropped


def write_empty(path: str) -> str:
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    open(path, 'wb').close()
    return path


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack('>I', len(data)) + body + struct.pack('>I', zlib.crc32(body))


def write_huge_png(path: str, width: int = 30000, height: int = 30000,
                   pixels: bool = True) -> str:
    """A valid all-black 1-bit PNG of width x height (about 110 kB for 30000x30000, streamed:
    no full-size buffer is ever held). pixels=False writes the header alone (no image data),
    so a reader that decodes it fails, and one that refuses it from the header does not."""
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    header = struct.pack('>IIBBBBB', width, height, 1, 0, 0, 0, 0)  # 1-bit grey
    with open(path, 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\n' + _png_chunk(b'IHDR', header))
        if pixels:
            packer, row = zlib.compressobj(9), bytes(1 + (width + 7) // 8)  # filter 0 + bits
            for start in range(0, height, 1000):
                block = packer.compress(row * min(1000, height - start))
                if block:
                    f.write(_png_chunk(b'IDAT', block))
            f.write(_png_chunk(b'IDAT', packer.flush()))
        f.write(_png_chunk(b'IEND', b''))
    return path
