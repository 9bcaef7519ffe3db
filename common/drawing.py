"""Faces drawn on photos: detect.py's annotated PNGs and the validation photos in TensorBoard
(training/val_images.py).

| Mark | Look |
|---|---|
| box | a rectangle, `colour`, about 1 px per 300 px of the image's long side |
| score | its value above the box's top left corner, `colour` |
| landmarks | 5 dots: left eye red, right eye blue, nose yellow, mouth corners magenta and cyan |
"""

from PIL import Image, ImageDraw

LANDMARK_COLOURS = ((255, 0, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255))


def draw_faces(image, boxes_xywh, colour, scores=None, landmarks=None):
    """Draws faces onto a PIL image in place.

    Args:
      image: PIL.Image (RGB).
      boxes_xywh: [N, 4] pixel [x, y, w, h].
      colour: (r, g, b) of the boxes and scores.
      scores: optional [N], written above each box.
      landmarks: optional [N, 10] pixel (x, y) pairs (data/features.py's order).
    """
    pen = ImageDraw.Draw(image)
    width = max(1, round(max(image.size) / 300))
    for i, (x, y, w, h) in enumerate(boxes_xywh):
        pen.rectangle([x, y, x + w, y + h], outline=colour, width=width)
        if scores is not None:
            pen.text((x + 2, max(0, y - 11)), f'{scores[i]:.2f}', fill=colour)
        if landmarks is not None and len(landmarks[i]):
            for k, dot in enumerate(LANDMARK_COLOURS):
                px, py = landmarks[i][2 * k], landmarks[i][2 * k + 1]
                pen.ellipse([px - width, py - width, px + width, py + width], fill=dot)
    return image


def to_image(pixels):
    """[H, W, 3] uint8 -> PIL.Image."""
    return Image.fromarray(pixels)
