"""Reading COCO-style json into numpy records: the one place where COCO XYWH becomes XYXY.

Numpy only. Boxes everywhere in sniper_d2 are ``(N, 4) float32 XYXY in original-image pixels``;
COCO's ``[x, y, w, h]`` exists only in json files, read here and written by the tools.

Bad annotations are not fatal: boxes with NaN/inf coordinates, zero or negative size, or lying
entirely outside their image are dropped; boxes partly outside are clipped; annotations naming an
unknown category or image are dropped. Every such case is counted and reported in one warning
naming the json file. Structural problems (not JSON, missing keys, images without size) raise
:class:`DatasetError` naming the file and the entry.
"""

import logging
import os
from collections import Counter

import numpy as np

from .io import read_json_file

__all__ = ["DatasetError", "load_coco_records", "records_to_coco_json", "boxes_xywh_to_xyxy",
           "boxes_xyxy_to_xywh", "crowd_flags", "non_crowd_boxes", "sanitize_boxes", "images_hash"]

logger = logging.getLogger(__name__)


class DatasetError(ValueError):
    """A data set file (or an image it names) cannot be used; the message names the file."""


def boxes_xywh_to_xyxy(boxes_xywh):
    """(N, 4) COCO [x, y, w, h] -> (N, 4) float32 [x0, y0, x1, y1]."""
    b = np.asarray(boxes_xywh, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1).astype(np.float32)


def boxes_xyxy_to_xywh(boxes_xyxy):
    """(N, 4) [x0, y0, x1, y1] -> (N, 4) float32 COCO [x, y, w, h]."""
    b = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1).astype(np.float32)


def _require(entry, keys, json_path, what):
    missing = [k for k in keys if k not in entry]
    if missing:
        raise DatasetError(f"{json_path}: {what} {entry.get('id', '?')} lacks key(s) {missing}")


def load_coco_records(json_path, image_root=None):
    """Read a COCO-style json into one record per image.

    Args:
        json_path (str): COCO instances json.
        image_root (str or None): folder that image ``file_name``s are relative to;
            default: the json's folder, then ``<json folder>/images``, whichever holds the
            first image.

    Returns:
        (records, categories):
          records: list of dict, one per image, in json order, with keys
            ``image_id`` (int), ``file_name`` (str, joined with image_root), ``height``, ``width``
            (int, from the json), ``boxes`` ((N, 4) float32 XYXY, original pixels, clipped),
            ``category_ids`` ((N,) int64, COCO ids), ``iscrowd`` ((N,) bool), and
            ``distractors`` ((M, 4) float32 XYXY; regions the synthetic generator recorded as
            look-alike non-objects; empty for other data sets).
          categories: the json's category list (dicts with ``id`` and ``name``), sorted by id.

    Raises:
        DatasetError: the file is missing, not JSON, or lacks required keys.
    """
    json_path = os.fspath(json_path)
    data = read_json_file(json_path, DatasetError, what="data set json")
    if not isinstance(data, dict) or "images" not in data:
        raise DatasetError(f"{json_path}: not a COCO json (no 'images' list)")
    images = data["images"]
    annotations = data.get("annotations", [])
    categories = sorted(data.get("categories", []), key=lambda c: c.get("id", 0))
    for c in categories:
        _require(c, ["id", "name"], json_path, "category")
    known_categories = {c["id"] for c in categories}

    image_root = _resolve_image_root(json_path, images, image_root)
    counts = Counter()
    by_image = {}
    for img in images:
        _require(img, ["id", "file_name", "height", "width"], json_path, "image")
        if int(img["height"]) <= 0 or int(img["width"]) <= 0:
            raise DatasetError(f"{json_path}: image {img['id']} ({img['file_name']}) has size "
                               f"{img['width']}x{img['height']}")
        if img["id"] in by_image:
            raise DatasetError(f"{json_path}: image id {img['id']} appears twice")
        by_image[img["id"]] = []

    for ann in annotations:
        _require(ann, ["image_id", "bbox", "category_id"], json_path, "annotation")
        if ann["image_id"] not in by_image:
            counts["annotation of an unknown image id"] += 1
            continue
        if known_categories and ann["category_id"] not in known_categories:
            counts["unknown category id"] += 1
            continue
        by_image[ann["image_id"]].append(ann)

    records = []
    for img in images:
        anns = by_image[img["id"]]
        h, w = int(img["height"]), int(img["width"])
        boxes = _bbox_array([a["bbox"] for a in anns], json_path, img["id"])
        cats = np.array([a["category_id"] for a in anns], dtype=np.int64)
        crowd = np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool)
        boxes, keep, img_counts = sanitize_boxes(boxes, (h, w))
        counts.update(img_counts)
        distractors = boxes_xywh_to_xyxy(img.get("distractors", np.zeros((0, 4))))
        records.append({
            "image_id": img["id"],
            "file_name": os.path.join(image_root, img["file_name"]),
            "height": h,
            "width": w,
            "boxes": boxes[keep],
            "category_ids": cats[keep],
            "iscrowd": crowd[keep],
            "distractors": distractors,
        })
    if counts:
        detail = ", ".join(f"{n} {why}" for why, n in sorted(counts.items()))
        logger.warning(f"{json_path}: dropped or clipped annotations: {detail}")
    return records, categories


def crowd_flags(record):
    """(N,) bool ``iscrowd`` of a record's N boxes (all False when the record has no such key)."""
    n = len(record["boxes"])
    crowd = record.get("iscrowd")
    return np.zeros(n, bool) if crowd is None else np.asarray(crowd, bool).reshape(n)


def non_crowd_boxes(record):
    """(K, 4) float32 XYXY original pixels: a record's boxes without its crowd boxes (the objects
    that chips must cover and statistics count)."""
    return np.asarray(record["boxes"], np.float32).reshape(-1, 4)[~crowd_flags(record)]


def _bbox_array(bboxes, json_path, image_id):
    try:
        arr = np.asarray(bboxes, dtype=np.float64).reshape(-1, 4)
    except (ValueError, TypeError) as e:
        raise DatasetError(f"{json_path}: image {image_id} has a bbox that is not 4 numbers: {e}") from e
    return boxes_xywh_to_xyxy(arr)


def sanitize_boxes(boxes, image_size):
    """Clip boxes to the image and flag the unusable ones.

    Args:
        boxes: (N, 4) float XYXY, original pixels.
        image_size: (height, width).

    Returns:
        (clipped (N, 4) float32, keep (N,) bool, counts: Counter of reasons for dropping/clipping)
    """
    h, w = image_size
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    counts = Counter()
    finite = np.isfinite(boxes).all(axis=1)
    counts["with NaN/inf coordinates"] += int((~finite).sum())
    safe = np.where(finite[:, None], boxes, 0.0)
    positive = (safe[:, 2] > safe[:, 0]) & (safe[:, 3] > safe[:, 1])
    counts["of zero or negative size"] += int((finite & ~positive).sum())
    clipped = np.empty_like(safe)
    clipped[:, 0::2] = np.clip(safe[:, 0::2], 0, w)
    clipped[:, 1::2] = np.clip(safe[:, 1::2], 0, h)
    inside = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    counts["entirely outside their image"] += int((finite & positive & ~inside).sum())
    was_clipped = finite & positive & inside & (clipped != safe).any(axis=1)
    counts["clipped to their image"] += int(was_clipped.sum())
    keep = finite & positive & inside
    return clipped, keep, Counter({k: v for k, v in counts.items() if v})


def _resolve_image_root(json_path, images, image_root):
    if image_root is not None:
        return os.fspath(image_root)
    base = os.path.dirname(os.path.abspath(json_path))
    if not images:
        return base
    first = images[0].get("file_name", "")
    for candidate in (base, os.path.join(base, "images")):
        if os.path.exists(os.path.join(candidate, first)):
            return candidate
    return base


def records_to_coco_json(records, categories):
    """Inverse of :func:`load_coco_records` (for tools and tests): records -> COCO dict."""
    images, annotations = [], []
    for rec in records:
        images.append({"id": rec["image_id"], "file_name": os.path.basename(rec["file_name"]),
                       "height": rec["height"], "width": rec["width"]})
        for box, cat, crowd in zip(boxes_xyxy_to_xywh(rec["boxes"]), rec["category_ids"],
                                   rec["iscrowd"]):
            annotations.append({"id": len(annotations) + 1, "image_id": rec["image_id"],
                                "bbox": [float(v) for v in box], "category_id": int(cat),
                                "iscrowd": int(crowd), "area": float(box[2] * box[3])})
    return {"images": images, "annotations": annotations, "categories": list(categories)}


def images_hash(records):
    """A short digest of which images a data set holds (ids, file names, sizes), not its boxes.

    Files derived from the images alone (e.g. proposals) carry it, so that a file made for another
    data set is refused.
    """
    from .io import stable_hash

    return stable_hash([[r["image_id"], os.path.basename(r["file_name"]), r["height"], r["width"]]
                        for r in records])
