"""Precision-recall curves drawn with PIL only (no matplotlib on the training machines)."""

import os
from typing import Dict, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from evaluation.wider import average_precision

_SIZE = (720, 600)
_MARGIN = (80, 50, 30, 70)  # left, top, right, bottom
_COLOURS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189),
            (140, 86, 75), (227, 119, 194), (127, 127, 127))


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def _text(draw, xy, text, font, anchor):
    draw.text(xy, text, fill=(0, 0, 0), font=font, anchor=anchor)


def write_pr_curve_png(path: str, curves: Dict[str, Tuple[np.ndarray, np.ndarray]],
                       title: str = 'Precision-recall') -> None:
    """Draws PR curves on recall (x) and precision (y) axes from 0 to 1 and saves a PNG.

    Args:
      path: output .png; its folder is created.
      curves: legend name -> (recall [K], precision [K]); the legend shows each curve's AP
        (VOC all-point, as in evaluation.wider). Curves are drawn as steps of the
        interpolated precision, the same area AP measures.
      title: drawn above the plot.
    """
    image = Image.new('RGB', _SIZE, 'white')
    draw = ImageDraw.Draw(image)
    left, top = _MARGIN[0], _MARGIN[1]
    right, bottom = _SIZE[0] - _MARGIN[2], _SIZE[1] - _MARGIN[3]
    small, big = _font(14), _font(18)

    def to_px(r, p):
        return left + r * (right - left), bottom - p * (bottom - top)

    for i in range(11):
        v = i / 10
        x, y = to_px(v, v)
        grid = (225, 225, 225) if i % 5 else (190, 190, 190)
        draw.line([(x, top), (x, bottom)], fill=grid)
        draw.line([(left, y), (right, y)], fill=grid)
        if i % 2 == 0:
            draw.line([(x, bottom), (x, bottom + 5)], fill=(0, 0, 0))
            draw.line([(left - 5, y), (left, y)], fill=(0, 0, 0))
            _text(draw, (x, bottom + 8), f'{v:.1f}', small, 'mt')
            _text(draw, (left - 8, y), f'{v:.1f}', small, 'rm')
    draw.rectangle([left, top, right, bottom], outline=(0, 0, 0))
    _text(draw, ((left + right) / 2, _SIZE[1] - 20), 'recall', big, 'ms')
    _text(draw, ((left + right) / 2, top / 2), title, big, 'mm')
    label = Image.new('RGB', (120, 24), 'white')
    _text(ImageDraw.Draw(label), (60, 12), 'precision', big, 'mm')
    label = label.rotate(90, expand=True)
    image.paste(label, (8, int((top + bottom) / 2 - label.height / 2)))

    legend = []
    for i, (name, (recall, precision)) in enumerate(curves.items()):
        colour = _COLOURS[i % len(_COLOURS)]
        recall = np.asarray(recall, np.float64)
        precision = np.asarray(precision, np.float64)
        ap = average_precision(recall, precision) if len(recall) else float('nan')
        legend.append((f'{name}  AP {ap:.3f}', colour))
        if not len(recall):
            continue
        envelope = np.maximum.accumulate(precision[::-1])[::-1]
        # Precision env[k] holds on recall (r[k-1], r[k]]: horizontal runs, vertical drops.
        points = [to_px(0.0, envelope[0])]
        for k, r in enumerate(recall):
            points.append(to_px(r, envelope[k]))
            if k + 1 < len(recall):
                points.append(to_px(r, envelope[k + 1]))
        draw.line(points, fill=colour, width=3, joint='curve')

    # Low recall with low precision is rare, so the lower-left corner is usually free.
    line_h = 22
    box_w = max(draw.textlength(t, font=small) for t, _ in legend) + 50 if legend else 0
    x0, y0 = left + 12, bottom - 12 - line_h * len(legend) - 8
    if legend:
        draw.rectangle([x0, y0, x0 + box_w, bottom - 12], fill='white', outline=(120, 120, 120))
    for i, (text, colour) in enumerate(legend):
        y = y0 + 4 + line_h * i + line_h / 2
        draw.line([(x0 + 8, y), (x0 + 36, y)], fill=colour, width=3)
        _text(draw, (x0 + 42, y), text, small, 'lm')
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    image.save(path, format='PNG')


def write_line_chart_png(path: str, series: Dict[str, Tuple[np.ndarray, np.ndarray]],
                         x_label: str, y_label: str, title: str) -> None:
    """Draws each series (legend name -> (x [K], y [K]), y from 0 to 1) as a line with
    dots on axes from 0 to the largest x, and saves a PNG (its folder is created)."""
    image = Image.new('RGB', _SIZE, 'white')
    draw = ImageDraw.Draw(image)
    left, top = _MARGIN[0], _MARGIN[1]
    right, bottom = _SIZE[0] - _MARGIN[2], _SIZE[1] - _MARGIN[3]
    small, big = _font(14), _font(18)
    x_max = max([float(np.max(x)) for x, _ in series.values() if len(x)] or [1.0])

    def to_px(x, y):
        return left + x / x_max * (right - left), bottom - y * (bottom - top)

    for i in range(11):
        x, y = to_px(x_max * i / 10, i / 10)
        draw.line([(x, top), (x, bottom)], fill=(225, 225, 225))
        draw.line([(left, y), (right, y)], fill=(225, 225, 225))
        if i % 2 == 0:
            _text(draw, (x, bottom + 8), f'{x_max * i / 10:,.0f}', small, 'mt')
            _text(draw, (left - 8, y), f'{i / 10:.1f}', small, 'rm')
    draw.rectangle([left, top, right, bottom], outline=(0, 0, 0))
    _text(draw, ((left + right) / 2, _SIZE[1] - 20), x_label, big, 'ms')
    _text(draw, ((left + right) / 2, top / 2), title, big, 'mm')
    label = Image.new('RGB', (200, 24), 'white')
    _text(ImageDraw.Draw(label), (100, 12), y_label, big, 'mm')
    label = label.rotate(90, expand=True)
    image.paste(label, (8, int((top + bottom) / 2 - label.height / 2)))
    for i, (name, (xs, ys)) in enumerate(series.items()):
        colour = _COLOURS[i % len(_COLOURS)]
        points = [to_px(x, y) for x, y in zip(xs, ys)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=3)
        for px, py in points:
            draw.ellipse([px - 4, py - 4, px + 4, py + 4], fill=colour)
        y = top + 16 + 22 * i
        draw.line([(left + 12, y), (left + 40, y)], fill=colour, width=3)
        _text(draw, (left + 46, y), name, small, 'lm')
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    image.save(path, format='PNG')
