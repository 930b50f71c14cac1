"""COCO AP of huge images by evaluation windows (numpy + pycocotools; no torch).

Plain COCO evaluation matches every detection of an image with every object of the same class: a
30k x 30k orthomosaic with 100k objects would need a 100k x 100k IoU matrix per class (80 GB). Here
a huge image is cut into a grid of square *evaluation windows* of ``window_size_px`` pixels, and
each window becomes one "image" of a single COCO evaluation (``COCOeval``), next to the data set's
ordinary images, which keep their ids. Scores are still ranked across all images and windows, so
the precision/recall curve, AP and AR are those of one evaluation.

The rule for objects cut by window borders: **by centre**. Every object (ground truth, crowd and
ignored regions included) and every detection belongs to exactly one window, the one holding the
centre of its box (a centre on a border goes to the window on its right / below; centres outside
the image to the nearest window). Boxes keep their coordinates and areas (the small / medium /
large ranges are unchanged); matching happens only within a window.

What this changes against plain, global matching: a detection and an object whose centres fall in
different windows can no longer match. Two boxes with IoU >= 0.5 overlap by at least half of each
one's width and height, so each one's centre lies inside the other: a detection can lose its match
only with an object that a window border crosses. With boxes of size s and windows of size W that
is about 2 s / W of the objects (:func:`cut_fraction` measures it); recall at every IoU threshold
moves by at most that share, and in tests AP and AP50 moved by less than it (-0.005 AP, -0.015 AP50
with 9% of the objects cut). When no matching pair straddles a border the result
is exactly plain COCO's (tests/test_evaluation_windows.py), except that ``maxDets`` caps
detections per *window*, not per image (set its last value above a window's detections; AR@1 and
AR@10 of a windowed image count per window).

Why it is bounded: the cost of COCO matching is the sum over windows of (detections x objects) of
each window, instead of (detections x objects) of the whole image; memory is one window's IoU
matrix at a time, plus the per-window match records COCOeval keeps (linear in the boxes).
"""

import contextlib
import io

import numpy as np

__all__ = ["window_grid", "window_index", "cut_fraction", "images_to_window", "split_into_windows",
           "coco_stats", "evaluate_coco"]


def window_grid(image_size, window_size_px):
    """(rows, cols) of the window grid of an image of ``image_size`` (height, width) px."""
    h, w = image_size
    return max(1, -(-int(h) // int(window_size_px))), max(1, -(-int(w) // int(window_size_px)))


def window_index(boxes_xywh, image_size, window_size_px):
    """The window of each box, by its centre.

    Args:
        boxes_xywh: (N, 4) float, COCO XYWH in the image's pixels.
        image_size: (height, width) of the image, px.
        window_size_px (int): side of the square windows, px.

    Returns:
        (N,) int64 window index, row-major in the grid of :func:`window_grid` (row * cols + col).
    """
    boxes = np.asarray(boxes_xywh, dtype=np.float64).reshape(-1, 4)
    rows, cols = window_grid(image_size, window_size_px)
    col = np.clip(np.floor((boxes[:, 0] + boxes[:, 2] / 2) / window_size_px), 0, cols - 1).astype(np.int64)
    row = np.clip(np.floor((boxes[:, 1] + boxes[:, 3] / 2) / window_size_px), 0, rows - 1).astype(np.int64)
    return row * cols + col


def cut_fraction(boxes_xywh, window_size_px):
    """Share of ``boxes_xywh`` ((N, 4) COCO XYWH, px) crossed by a window border: the objects whose
    matches may differ from plain COCO's (0.0 for no boxes)."""
    boxes = np.asarray(boxes_xywh, dtype=np.float64).reshape(-1, 4)
    if not len(boxes):
        return 0.0
    x0, y0 = boxes[:, 0], boxes[:, 1]
    cut_x = np.floor(x0 / window_size_px) != np.floor(np.nextafter(x0 + boxes[:, 2], -np.inf) / window_size_px)
    cut_y = np.floor(y0 / window_size_px) != np.floor(np.nextafter(y0 + boxes[:, 3], -np.inf) / window_size_px)
    return float(np.mean(cut_x | cut_y))


def images_to_window(gt, *, min_pixels, min_objects):
    """Ids of the images of ``gt`` (COCO json dict) with at least ``min_pixels`` pixels or at least
    ``min_objects`` annotations (a limit <= 0 is off)."""
    ids = np.array([im["id"] for im in gt["images"]], dtype=np.int64)
    pixels = np.array([im["width"] * im["height"] for im in gt["images"]], dtype=np.float64)
    huge = (pixels >= min_pixels) if min_pixels > 0 else np.zeros(len(ids), bool)
    if min_objects > 0 and len(ids):
        ann_images = np.array([a["image_id"] for a in gt["annotations"]], dtype=np.int64)
        counts = np.zeros(len(ids), np.int64)
        order = np.argsort(ids)
        position = np.searchsorted(ids[order], ann_images)
        np.add.at(counts, order[np.clip(position, 0, len(ids) - 1)], 1)
        huge |= counts >= min_objects
    return [int(i) for i in ids[huge]]


def _window_ids(items, sizes, window_size_px):
    """New image id of each item (dicts with image_id, bbox) of the windowed images, or its own id."""
    if not items:
        return np.zeros(0, np.int64)
    image_ids = np.array([it["image_id"] for it in items], dtype=np.int64)
    boxes = np.array([it["bbox"] for it in items], dtype=np.float64).reshape(-1, 4)
    new_ids = image_ids.copy()
    for image_id, (size, base) in sizes.items():  # one vectorized pass per huge image
        mine = np.flatnonzero(image_ids == image_id)
        new_ids[mine] = base + window_index(boxes[mine], size, window_size_px)
    return new_ids


def split_into_windows(gt, results, window_size_px, image_ids):
    """Ground truth and detections with each image of ``image_ids`` replaced by its windows.

    Args:
        gt (dict): COCO json (``images`` with id / width / height, ``annotations`` with image_id /
            bbox XYWH px, ``categories``).
        results (list[dict]): COCO results (image_id, category_id, bbox XYWH px, score).
        window_size_px (int): side of the square evaluation windows, px.
        image_ids (list[int]): the images to cut (e.g. from :func:`images_to_window`).

    Returns:
        (gt dict, results list, windows): ``gt`` and ``results`` with new image ids for the windows
        (after every existing id; other images keep theirs; boxes unchanged), and ``windows``:
        {window image id: (original image id, row, col)}.
    """
    by_id = {im["id"]: im for im in gt["images"]}
    first = max(by_id, default=0) + 1
    sizes, windows, window_images = {}, {}, []
    for image_id in image_ids:
        im = by_id[image_id]
        rows, cols = window_grid((im["height"], im["width"]), window_size_px)
        sizes[image_id] = ((im["height"], im["width"]), first)
        for k in range(rows * cols):
            r, c = divmod(k, cols)
            windows[first + k] = (image_id, r, c)
            window_images.append({"id": first + k, "file_name": f"{im.get('file_name', image_id)}#window{r},{c}",
                                  "height": min(window_size_px, im["height"] - r * window_size_px),
                                  "width": min(window_size_px, im["width"] - c * window_size_px)})
        first += rows * cols
    cut = set(image_ids)
    images = [im for im in gt["images"] if im["id"] not in cut] + window_images
    ann_ids = _window_ids(gt["annotations"], sizes, window_size_px)
    res_ids = _window_ids(results, sizes, window_size_px)
    annotations = [dict(a, image_id=int(i)) for a, i in zip(gt["annotations"], ann_ids.tolist())]
    results = [dict(r, image_id=int(i)) for r, i in zip(results, res_ids.tolist())]
    return dict(gt, images=images, annotations=annotations), results, windows


def coco_stats(coco_eval):
    """The 12 numbers of ``COCOeval.summarize`` from an accumulated ``coco_eval``, with the last
    ``maxDets`` where COCO's summary hard-codes 100 (as detectron2's ``COCOevalMaxDets``), without
    printing: AP, AP50, AP75, APs, APm, APl, AR@maxDets[0], AR@maxDets[1], AR@maxDets[2], ARs, ARm,
    ARl; -1.0 where nothing is measured.

    Returns:
        (12,) float64 array.
    """
    p = coco_eval.params
    precision, recall = coco_eval.eval["precision"], coco_eval.eval["recall"]  # (T, R, K, A, M), (T, K, A, M)

    def mean(values, iou=None, area="all", max_dets=p.maxDets[-1]):
        a, m = p.areaRngLbl.index(area), list(p.maxDets).index(max_dets)
        values = values[..., a, m]
        if iou is not None:
            values = values[np.flatnonzero(np.isclose(p.iouThrs, iou))]
        values = values[values > -1]
        return float(values.mean()) if values.size else -1.0

    return np.array([mean(precision), mean(precision, iou=0.5), mean(precision, iou=0.75),
                     mean(precision, area="small"), mean(precision, area="medium"), mean(precision, area="large"),
                     *(mean(recall, max_dets=d) for d in p.maxDets[:3]),
                     mean(recall, area="small"), mean(recall, area="medium"), mean(recall, area="large")])


def evaluate_coco(gt, results, *, window_size_px=0, windowed_image_ids=(), max_dets=(1, 10, 100)):
    """One COCO bbox evaluation of ``results`` against ``gt``, the images ``windowed_image_ids`` cut
    into evaluation windows (see the module docstring).

    Args:
        gt (dict), results (list[dict]): COCO json and COCO results, data set category ids.
        window_size_px (int): side of the evaluation windows, px (used when windowed_image_ids).
        windowed_image_ids (iterable[int]): images evaluated by windows; empty: plain COCO.
        max_dets (tuple[int]): COCOeval ``maxDets``, 3 values (per image; per window for windowed
            images: AR@maxDets[0] and AR@maxDets[1] of a windowed image count per window).

    Returns:
        pycocotools COCOeval, evaluated and accumulated, with ``.stats`` from :func:`coco_stats`
        (no printing: log what you need).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    windowed_image_ids = list(windowed_image_ids)
    if windowed_image_ids:
        gt, results, _ = split_into_windows(gt, results, window_size_px, windowed_image_ids)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results) if results else COCO()
        coco_eval = COCOeval(coco_gt, coco_dt, "bbox")
        coco_eval.params.maxDets = list(max_dets)
        coco_eval.evaluate()
        coco_eval.accumulate()
    coco_eval.stats = coco_stats(coco_eval)
    return coco_eval
