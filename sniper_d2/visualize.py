"""Drawn detections a person can read at a glance: one colour per class, a legend, labels that never
overprint, small objects still visible on a reduced image.

Numpy + OpenCV only (no torch at import; detection tensors are read through ``np.asarray``).

- :func:`draw_detections`: an image file with its detections drawn, read reduced when it is large
  (what ``tools/infer.py --draw`` and the demo write).
- :func:`render_detections`: the same on a BGR array already in memory.
- :func:`place_labels`: the greedy label placement (exposed for tests): labels in decreasing score
  order, each at the first free position around its box (above, inside, below, beside); a label with
  its score that fits nowhere is tried again without the score, then skipped; once labels cover a
  tenth of the image, the rest go unlabelled (the colour and the legend still name the class). No
  two placed labels overlap.

Sizes follow the drawn image's long side (``DrawStyle.for_image``): line width, font and the smallest
box drawn (a box smaller than that on the reduced image is drawn enlarged around its centre, so a 10 px
object on a 20,000 px scene drawn at 4,096 px is still a visible square of its class colour).
"""

import math
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["PALETTE", "class_colors", "DrawStyle", "place_labels", "render_detections", "draw_detections"]

# BGR, high contrast on photos and against each other (Tableau 10, reordered so that the first
# classes differ most in hue).
PALETTE = ((40, 39, 214), (180, 119, 31), (44, 160, 44), (14, 127, 255), (189, 103, 148), (207, 190, 23),
           (34, 189, 188), (194, 119, 227), (75, 86, 140), (127, 127, 127))
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def class_colors(num_classes):
    """A distinct BGR colour per class: the fixed :data:`PALETTE` first, then hues spread by the
    golden ratio (distinct from each other, bright enough to read).

    Returns:
        list of ``num_classes`` (b, g, r) int tuples.
    """
    colors = list(PALETTE[:num_classes])
    for i in range(len(colors), num_classes):
        hue = int(((i - len(PALETTE)) * 0.618034 % 1.0) * 180)
        sat_val = (255, 220) if i % 2 else (200, 255)
        hsv = np.array([[[hue, *sat_val]]], np.uint8)
        colors.append(tuple(int(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]))
    return colors


@dataclass(frozen=True)
class DrawStyle:
    """Sizes in drawn-image pixels."""

    line_px: int = 2  # box outline width
    font_scale: float = 0.5  # cv2 Hershey simplex scale
    text_thickness: int = 1
    pad_px: int = 2  # around label text
    min_box_px: int = 8  # boxes smaller than this on the drawn image are drawn this large, centred
    max_label_cover: float = 0.1  # labels stop once they cover this fraction of the image

    @classmethod
    def for_image(cls, image_size):
        """Sizes for a drawn image of ``image_size`` (H, W): text about 1.1% of the long side (at least
        ~11 px high), lines 1 px per 500 px."""
        long_side = max(image_size)
        text_px = min(40.0, max(11.0, long_side / 90.0))
        line = max(1, round(long_side / 500))
        return cls(line_px=line, font_scale=text_px / 22.0, text_thickness=max(1, round(text_px / 14)),
                   pad_px=max(2, round(text_px / 6)), min_box_px=max(6, 4 * line))


def _text_size(text, style):
    """(w, h) in px of ``text`` on its label background (padding included)."""
    (w, h), baseline = cv2.getTextSize(text, _FONT, style.font_scale, style.text_thickness)
    return w + 2 * style.pad_px, h + baseline + 2 * style.pad_px


def _candidates(box, size, image_size):
    """(8, 4) int label rectangles [x0, y0, x1, y1) around ``box`` (x0, y0, x1, y1), in order of
    preference: above-left, inside top-left, below-left, above-right, below-right, inside bottom-left,
    left, right; each shifted into the image."""
    x0, y0, x1, y1 = box
    w, h = size
    xy = np.array([[x0, y0 - h], [x0, y0], [x0, y1], [x1 - w, y0 - h], [x1 - w, y1], [x0, y1 - h],
                   [x0 - w, y0], [x1, y0]], np.int64)
    xy[:, 0] = np.clip(xy[:, 0], 0, max(0, image_size[1] - w))
    xy[:, 1] = np.clip(xy[:, 1], 0, max(0, image_size[0] - h))
    return np.concatenate([xy, xy + [w, h]], axis=1)


def _free(cands, placed):
    """(C,) bool: candidate rectangles overlapping none of ``placed`` (K, 4) (half-open rectangles)."""
    if len(placed) == 0:
        return np.ones(len(cands), bool)
    p = np.asarray(placed)
    hit = ((cands[:, None, 0] < p[None, :, 2]) & (p[None, :, 0] < cands[:, None, 2])
           & (cands[:, None, 1] < p[None, :, 3]) & (p[None, :, 1] < cands[:, None, 3]))
    return ~hit.any(1)


def _hides_a_box(cands, boxes, own):
    """(C,) bool: the candidate rectangle contains some other box (N, 4) whole (box ``own`` excepted)."""
    inside = ((cands[:, None, 0] <= boxes[None, :, 0]) & (cands[:, None, 1] <= boxes[None, :, 1])
              & (boxes[None, :, 2] <= cands[:, None, 2]) & (boxes[None, :, 3] <= cands[:, None, 3]))
    inside[:, own] = False
    return inside.any(1)


def place_labels(boxes, texts, image_size, style, reserved=()):
    """Greedy, collision-free label placement.

    Args:
        boxes: (N, 4) int XYXY drawn-image pixels, in priority order (best first).
        texts: per box a tuple of label texts to try, preferred first (e.g. ``("disk 0.93", "disk")``).
        image_size: (H, W) of the drawn image.
        style (DrawStyle): font sizes.
        reserved: (M, 4) rectangles no label may cover.

    Returns:
        list of (box index, text, (x0, y0, x1, y1)) for the labels placed; the rectangles are
        half-open, inside the image, and pairwise disjoint (also disjoint from ``reserved``). Placing
        stops once the labels cover ``style.max_label_cover`` of the image. Among free positions, one
        that covers no other box whole is preferred.
    """
    placed = [tuple(int(v) for v in r) for r in reserved]
    out = []
    boxes = np.asarray(boxes, np.int64).reshape(-1, 4)
    budget, covered = style.max_label_cover * image_size[0] * image_size[1], 0
    for i, box in enumerate(boxes):
        if covered >= budget:
            break
        for text in texts[i]:
            size = _text_size(text, style)
            if size[0] > image_size[1] or size[1] > image_size[0]:
                continue  # wider or taller than the image: try the shorter text
            cands = _candidates(box, size, image_size)
            free = np.flatnonzero(_free(cands, placed))
            if len(free):
                clear = free[~_hides_a_box(cands[free], boxes, i)]  # prefer not to cover a whole box
                rect = tuple(int(v) for v in cands[clear[0] if len(clear) else free[0]])
                placed.append(rect)
                out.append((i, text, rect))
                covered += (rect[2] - rect[0]) * (rect[3] - rect[1])
                break
    return out


def _text_color(bgr):
    """Black or white, whichever reads better on ``bgr``."""
    b, g, r = bgr
    return (0, 0, 0) if 0.114 * b + 0.587 * g + 0.299 * r > 140 else (255, 255, 255)


def _put_label(image, text, rect, color, style):
    x0, y0, x1, y1 = rect
    cv2.rectangle(image, (x0, y0), (x1 - 1, y1 - 1), color, -1)
    (_, h), baseline = cv2.getTextSize(text, _FONT, style.font_scale, style.text_thickness)
    cv2.putText(image, text, (x0 + style.pad_px, y1 - style.pad_px - baseline), _FONT, style.font_scale,
                _text_color(color), style.text_thickness, cv2.LINE_AA)


def _legend(image, entries, colors, style):
    """A legend strip under ``image``: per entry a colour swatch and its text, wrapped into rows.

    Returns:
        (H + strip, W, 3) uint8 image.
    """
    h, w = image.shape[:2]
    sizes = [_text_size(t, style) for t in entries]
    row_h = max([s[1] for s in sizes] + [1]) + style.pad_px
    swatch = row_h - 2 * style.pad_px
    x, rows, positions = style.pad_px, 0, []
    for (tw, _), text in zip(sizes, entries):
        item_w = swatch + tw + 3 * style.pad_px
        if x + item_w > w and x > style.pad_px:
            x, rows = style.pad_px, rows + 1
        positions.append((x, rows))
        x += item_w
    strip = np.full((row_h * (rows + 1) + style.pad_px, w, 3), 255, np.uint8)
    for (x, row), text, color in zip(positions, entries, colors):
        y = style.pad_px + row * row_h
        cv2.rectangle(strip, (x, y + style.pad_px), (x + swatch, y + style.pad_px + swatch), color, -1)
        cv2.rectangle(strip, (x, y + style.pad_px), (x + swatch, y + style.pad_px + swatch), (0, 0, 0), 1)
        (_, th), baseline = cv2.getTextSize(text, _FONT, style.font_scale, style.text_thickness)
        cv2.putText(strip, text, (x + swatch + 2 * style.pad_px, y + row_h - style.pad_px - baseline), _FONT,
                    style.font_scale, (0, 0, 0), style.text_thickness, cv2.LINE_AA)
    cv2.line(strip, (0, 0), (w - 1, 0), (0, 0, 0), 1)
    return np.concatenate([image, strip], axis=0)


def render_detections(image, boxes, scores, classes, class_names=(), threshold=0.0, style=None):
    """Draw detections on a copy of a BGR image, with a legend strip added under it.

    Args:
        image: (H, W, 3) uint8 BGR.
        boxes: (N, 4) float XYXY in ``image``'s pixels. scores: (N,) float. classes: (N,) int
            (contiguous ids; ``class_names[c]`` names class c, the id itself is shown otherwise).
        threshold (float): detections with a lower score are not drawn.
        style (DrawStyle or None): None = :meth:`DrawStyle.for_image`.

    Returns:
        (H + legend, W, 3) uint8 BGR: boxes in their class colour (best on top), labels "name score"
        where there is room, "name" where only that fits, none where nothing fits; under the image a
        legend: per class drawn, its colour, name and number of detections.
    """
    image = np.ascontiguousarray(image, np.uint8).copy()
    h, w = image.shape[:2]
    style = style or DrawStyle.for_image((h, w))
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    classes = np.asarray(classes, np.int64).reshape(-1)
    keep = scores >= threshold
    boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
    order = np.argsort(-scores, kind="stable")
    boxes, scores, classes = boxes[order], scores[order], classes[order]

    # Boxes too small to see are drawn min_box_px large around their centre.
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = np.maximum((boxes[:, 2:] - boxes[:, :2]) / 2, style.min_box_px / 2)
    drawn = np.round(np.concatenate([centre - half, centre + half], axis=1)).astype(np.int64)
    colors = class_colors(max(len(class_names), int(classes.max()) + 1 if len(classes) else 0))
    names = [class_names[c] if 0 <= c < len(class_names) else str(c) for c in classes.tolist()]
    for box, c in zip(drawn[::-1].tolist(), classes[::-1].tolist()):  # best last: on top
        cv2.rectangle(image, (box[0], box[1]), (box[2], box[3]), colors[c], style.line_px)
    texts = [(f"{n} {s:.2f}", n) for n, s in zip(names, scores.tolist())]
    for i, text, rect in place_labels(drawn, texts, (h, w), style):
        _put_label(image, text, rect, colors[classes[i]], style)

    present, counts = np.unique(classes, return_counts=True)
    entries = [f"{class_names[c] if 0 <= c < len(class_names) else c}: {k}" for c, k in zip(present.tolist(),
                                                                                           counts.tolist())]
    if not entries:
        entries, legend_colors = [f"no detections with score >= {threshold:g}"], [(255, 255, 255)]
    else:
        legend_colors = [colors[c] for c in present.tolist()]
    return _legend(image, entries, legend_colors, style)


def draw_detections(file_name, det, class_names, threshold, max_side):
    """BGR image of ``file_name`` with its detections drawn (:func:`render_detections`), the image at
    most ``max_side`` px on its long side (legend strip added under it).

    A larger image is read reduced (JPEG draft, TIFF windows: the largest power-of-2 reduction that
    keeps at least ``max_side`` pixels) and resized to exactly ``max_side``, and the boxes are scaled
    with it, so drawing never holds the full-size image of a huge scene.

    Args:
        file_name (str): the image. det: dict ``boxes`` (N, 4) XYXY original-image pixels, ``scores``
            (N,), ``classes`` (N,) (CPU tensors or arrays). class_names: names of the contiguous ids.
        threshold (float): lowest score drawn. max_side (int): long side of the drawn image, px.
    """
    from .image_io import open_image

    def reduction(size):  # the largest power of 2 that keeps the long side >= max_side (then resized)
        return float(2 ** max(0, math.floor(math.log2(max(size) / max_side))))

    with open_image(file_name, "BGR", max_reduction=reduction) as reader:
        h, w = reader.image_size
        region = reader.read_region((0, 0, w, h), max_reduction=reduction((h, w)))
    image = region.pixels
    factor = 1.0 / region.reduction
    if max(image.shape[:2]) > max_side:
        extra = max_side / max(image.shape[:2])
        image = cv2.resize(image, None, fx=extra, fy=extra, interpolation=cv2.INTER_AREA)
        factor *= extra
    boxes = np.asarray(det["boxes"], np.float64).reshape(-1, 4) * factor
    return render_detections(image, boxes, det["scores"], det["classes"], class_names, threshold)
