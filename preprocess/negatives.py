"""Face-free images: generated, cropped away from labelled faces, or from a folder.

Three kinds, all yielding items with no box (a valid record: "no face here"):
  * ``generated_negatives``: noise (as the seed project did), gradients and textures with
    non-face distractors (skin-coloured blobs included), from ``preprocess.backgrounds``.
  * ``crops_away_from_faces``: crops of labelled photos that overlap no face box, ignored
    faces included. They are lazy ``CropItem``s: the image is loaded and the crop chosen
    by whoever calls ``to_raw_item`` (the shard writer's workers), so the process that
    reads the annotations holds no pixels.
  * ``folder_negatives``: a folder of face-free photos, or a folder with ``labels.jsonl``
    in which every ``boxes`` is ``[]`` (like ``shared/data/no_faces``).
Source ids start with ``negatives_generated/``, ``negatives_crops/`` and
``negatives_folder/`` so the manifest counts each kind.
"""

import dataclasses
import json
import math
import os
import zlib
from typing import Callable, Iterable, Iterator, Union

import numpy as np
from PIL import Image

from preprocess import backgrounds
from preprocess import files
from preprocess import items as items_lib
from preprocess import synthetic
from preprocess.items import IMAGE_EXTENSIONS, RawItem, SkipItem
from preprocess.splits import split_by_hash

_MIN_CROP = 32


def hash_split(val_fraction: float) -> Callable[[str], str]:
    """A split rule that never drifts: ``splits.split_by_hash`` of the name ('val' or 'train')."""
    def rule(name: str) -> str:
        return split_by_hash(name, val_fraction)
    return rule


@dataclasses.dataclass
class GeneratedNegative:
    """A generated face-free image not drawn yet (drawn by ``to_raw_item``, e.g. in a worker)."""
    seed: int
    split: str
    index: int
    min_side: int = 160
    max_side: int = 320

    @property
    def source_id(self) -> str:
        return f'negatives_generated/{self.split}/{self.seed}/{self.index:07d}'

    def to_raw_item(self) -> RawItem:
        rng = synthetic.image_rng(self.seed, self.split, self.index, stream=1)
        height = int(rng.integers(self.min_side, self.max_side + 1))
        width = int(rng.integers(self.min_side, self.max_side + 1))
        if rng.random() < 0.25:  # plain uniform noise, as the seed project's negatives
            pixels = backgrounds.noise_background(rng, height, width)
        else:
            image = Image.fromarray(backgrounds.random_background(rng, height, width))
            backgrounds.draw_distractors(rng, image, int(rng.integers(0, 9)))
            pixels = np.asarray(image)
        return RawItem(source_id=self.source_id, path=None, boxes_xywh=np.zeros([0, 4], np.float32),
                       split=self.split, pixels=pixels, origin=self.source_id)


def generated_negative_specs(num: int, seed: int, split: str, min_side: int = 160,
                             max_side: int = 320) -> Iterator[GeneratedNegative]:
    """The lazy form of ``generated_negatives`` (what the shard writer is given)."""
    for index in range(num):
        yield GeneratedNegative(seed, split, index, min_side, max_side)


def generated_negatives(num: int, seed: int, split: str, min_side: int = 160,
                        max_side: int = 320) -> Iterator[RawItem]:
    """Yields ``num`` generated face-free RawItems (pixels set; deterministic by seed and split).

    A quarter are plain uniform noise (the seed project's negatives); the rest are flat
    colours, gradients or textures with distractor shapes (skin-coloured blobs included).
    """
    for spec in generated_negative_specs(num, seed, split, min_side, max_side):
        yield spec.to_raw_item()


@dataclasses.dataclass
class CropItem:
    """Crop number ``index`` of a labelled image, chosen and cut when loaded.

    ``parent`` is a RawItem or a lazy item (with ``to_raw_item``); loading happens in
    ``to_raw_item`` (in the shard writer's worker), so the reader's process holds no pixels.
    """
    parent: object
    index: int
    seed: int

    @property
    def source_id(self) -> str:
        return f'negatives_crops/{self.parent.source_id}#{self.index}'

    @property
    def split(self) -> str:
        return self.parent.split

    def to_raw_item(self) -> RawItem:
        """Loads the parent (``items.load_rgb``) and cuts a face-free crop.

        Raises:
          SkipItem: the parent cannot be loaded, or has no face-free spot
            ('no_face_free_crop').
        """
        parent = self.parent.to_raw_item() if hasattr(self.parent, 'to_raw_item') else self.parent
        image = parent.pixels if parent.pixels is not None else items_lib.load_rgb(parent.path)
        height, width = image.shape[:2]
        rng = np.random.default_rng([self.seed, _key(parent.source_id), self.index])
        crop = free_crop(rng, width, height, parent.boxes_xywh)
        if crop is None:
            raise SkipItem('no_face_free_crop', f'{parent.origin or parent.source_id}: '
                           f'no face-free {_MIN_CROP}+ px crop in {width}x{height}')
        x, y, w, h = crop
        return RawItem(source_id=f'{self.source_id}@{x},{y},{w},{h}', path=None,
                       boxes_xywh=np.zeros([0, 4], np.float32), split=parent.split,
                       pixels=np.ascontiguousarray(image[y:y + h, x:x + w]),
                       origin=parent.origin or parent.source_id)


def _key(text: str) -> int:
    return zlib.crc32(text.encode('utf-8'))


def free_crop(rng, width: int, height: int, boxes_xywh, tries: int = 30):
    """A crop (x, y, w, h) in ints, at least 32 px a side, that touches none of the boxes.

    Args:
      rng: numpy Generator.
      width, height: image size.
      boxes_xywh: [N, 4] pixel boxes; all count (ignored ones too); a box with width or
        height <= 0 counts as its corner point; non-finite rows are skipped.

    Returns:
      The crop, or None when ``tries`` random crops all hit a box.
    """
    if min(width, height) < _MIN_CROP:
        return None
    b = np.asarray(boxes_xywh, np.float64).reshape(-1, 4)
    b = b[np.all(np.isfinite(b), axis=1)]
    x0, y0 = b[:, 0], b[:, 1]
    x1, y1 = x0 + np.maximum(b[:, 2], 0), y0 + np.maximum(b[:, 3], 0)
    for _ in range(tries):
        side = rng.uniform(0.2, 0.7) * min(width, height)
        w = min(width, int(max(_MIN_CROP, side * rng.uniform(0.75, 1.33))))
        h = min(height, int(max(_MIN_CROP, side * rng.uniform(0.75, 1.33))))
        x = int(rng.integers(0, width - w + 1))
        y = int(rng.integers(0, height - h + 1))
        # Pixel columns x..x+w-1 vs real-valued boxes: touching counts as a hit.
        if not np.any((x0 <= x + w) & (x1 >= x) & (y0 <= y + h) & (y1 >= y)):
            return x, y, w, h
    return None


def crops_away_from_faces(items: Iterable[Union[RawItem, SkipItem]], num_per_image: float,
                          seed: int) -> Iterator[CropItem]:
    """Yields face-free crops of labelled images, each overlapping no face box.

    Args:
      items: positive RawItems or lazy items (SkipItems are passed over: the positive
        stream reports them).
      num_per_image: crops per image; a fraction f gives floor(f) crops plus one more
        with probability f - floor(f) (deterministic by seed and source id).
      seed: random seed.

    Yields:
      CropItem; its ``to_raw_item()`` loads the image via ``items.load_rgb`` and returns
      a RawItem with no box whose source id ends in '@x,y,w,h' (the crop in the parent).
      Every box of the parent counts, ignored ones included, so a crop never holds a
      labelled face or a part of one.
    """
    for item in items:
        if isinstance(item, SkipItem):
            continue
        rng = np.random.default_rng([seed, _key(item.source_id)])
        count = int(math.floor(num_per_image)) + int(rng.random() < num_per_image % 1)
        for k in range(count):
            yield CropItem(item, k, seed)


def folder_negatives(folder: str, split_rule: Callable[[str], str]) -> Iterator[Union[RawItem, SkipItem]]:
    """Yields face-free photos of a folder as RawItems (by path; loaded by the writer).

    Args:
      folder: either a folder with ``labels.jsonl`` (one ``{"image": rel_path, "boxes":
        [...]}`` per line; every ``boxes`` must be ``[]``), or a folder of image files
        (searched recursively, sorted, so the order is deterministic).
      split_rule: maps the image's path relative to ``folder`` to a split (e.g.
        ``hash_split(0.1)``).

    Yields:
      RawItem with no boxes; SkipItem('malformed_annotation', 'file:line: text') for a
      bad manifest line, and SkipItem('not_face_free', ...) for an entry with boxes.
    """
    manifest = os.path.join(folder, 'labels.jsonl')
    if files.exists(manifest):
        with files.open_text(manifest) as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                where = f'{manifest}:{line_no}'
                try:
                    entry = json.loads(line)
                    rel, boxes = entry['image'], entry.get('boxes', [])
                except (ValueError, KeyError, TypeError):
                    yield SkipItem('malformed_annotation', f'{where}: {line.strip()[:120]}')
                    continue
                if boxes:
                    yield SkipItem('not_face_free', f'{where}: {rel} has {len(boxes)} boxes')
                    continue
                yield _folder_item(folder, rel, split_rule, where)
        return
    names = []
    for root, _, names_here in files.walk(folder):
        names += [os.path.relpath(os.path.join(root, n), folder) for n in names_here
                  if n.lower().endswith(IMAGE_EXTENSIONS)]
    for rel in sorted(names):
        yield _folder_item(folder, rel, split_rule, os.path.join(folder, rel))


def _folder_item(folder: str, rel: str, split_rule, origin: str) -> RawItem:
    name = os.path.basename(os.path.normpath(folder))
    return RawItem(source_id=f'negatives_folder/{name}/{rel}', path=os.path.join(folder, rel),
                   boxes_xywh=np.zeros([0, 4], np.float32), split=split_rule(rel), origin=origin)
