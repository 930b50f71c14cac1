"""VisDrone-DET annotations -> COCO json.

A VisDrone-DET split has ``images/NAME.jpg`` and ``annotations/NAME.txt``; each txt line is
``bbox_left,bbox_top,bbox_width,bbox_height,score,object_category,truncation,occlusion``.

Mapping (documented choices):
- categories 1..10 (pedestrian ... motor) become COCO categories 1..10;
- category 0, *ignored regions*: ``iscrowd = 1`` boxes of category 1 with ``"ignore": 1``. COCO
  evaluation does not count detections inside crowd regions, and SNIPER trains on them as ignore
  regions (``SNIPER.CROWD_AS_IGNORE``);
- category 11, *others* (objects of no listed class): also an ignore region (``iscrowd = 1``,
  ``"ignore": 1``, ``"visdrone_category": 11``): they are objects, so neither positives of a listed
  class nor background;
- ``truncation`` and ``occlusion`` are kept as annotation attributes; ``score`` (0 or 1 in
  ground truth: whether the box counts in evaluation) is kept as ``visdrone_score``, and boxes with
  score 0 of categories 1..10 also become ignore regions, as in the official evaluation.
Image sizes are read from image headers (EXIF-rotation aware), not decoded.
"""

import logging
import os

__all__ = ["VISDRONE_CATEGORIES", "VisDroneFormatError", "parse_annotation_file", "convert_split"]

logger = logging.getLogger(__name__)

VISDRONE_CATEGORIES = [
    {"id": i, "name": n, "supercategory": "visdrone"}
    for i, n in enumerate(["pedestrian", "people", "bicycle", "car", "van", "truck", "tricycle",
                           "awning-tricycle", "bus", "motor"], start=1)
]
IGNORED_REGION, OTHERS = 0, 11
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


class VisDroneFormatError(ValueError):
    """A malformed annotation line; the message names the file and the line number."""


def parse_annotation_file(path):
    """Parse one VisDrone txt file.

    Returns:
        list of dict: ``bbox`` [x, y, w, h] (floats, pixels), ``score``, ``category``,
        ``truncation``, ``occlusion`` (ints), one per non-empty line.

    Raises:
        VisDroneFormatError: a line without 8 integer fields (7 in some test-dev files is refused
            too), or with a category outside 0..11; the message names file and line.
    """
    rows = []
    with open(path) as f:
        for number, line in enumerate(f, start=1):
            text = line.strip().rstrip(",")
            if not text:
                continue
            fields = [v.strip() for v in text.split(",")]
            if len(fields) != 8:
                raise VisDroneFormatError(f"{path}:{number}: expected 8 comma-separated values, got "
                                          f"{len(fields)}: {line.strip()!r}")
            try:
                x, y, w, h, score, cat, trunc, occ = (int(float(v)) for v in fields)
            except ValueError as e:
                raise VisDroneFormatError(f"{path}:{number}: not a number in {line.strip()!r}") from e
            if not 0 <= cat <= OTHERS:
                raise VisDroneFormatError(f"{path}:{number}: object category {cat} is outside 0..11")
            rows.append({"bbox": [float(x), float(y), float(w), float(h)], "score": score, "category": cat,
                         "truncation": trunc, "occlusion": occ})
    return rows


def _annotation(row, ann_id, image_id):
    cat = row["category"]
    ignore = cat in (IGNORED_REGION, OTHERS) or row["score"] == 0
    w, h = row["bbox"][2], row["bbox"][3]
    return {"id": ann_id, "image_id": image_id, "category_id": cat if 1 <= cat <= 10 else 1,
            "bbox": row["bbox"], "area": w * h, "iscrowd": int(ignore), "ignore": int(ignore),
            "visdrone_category": cat, "visdrone_score": row["score"],
            "truncation": row["truncation"], "occlusion": row["occlusion"]}


def convert_split(root, progress=True):
    """Convert ``root/images`` + ``root/annotations`` into a COCO dict.

    Images without an annotation file are kept (no objects), with a warning that counts them.
    Boxes with zero width or height are dropped, counted in a warning.
    """
    from tqdm import tqdm

    from ..image_io import read_image_size

    image_dir, ann_dir = os.path.join(root, "images"), os.path.join(root, "annotations")
    for folder in (image_dir, ann_dir):
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"{folder}: folder not found (a VisDrone-DET split has images/ and annotations/)")
    names = sorted(f for f in os.listdir(image_dir) if f.lower().endswith(IMAGE_EXTENSIONS))
    if not names:
        raise FileNotFoundError(f"{image_dir}: no images")
    images, annotations, missing, degenerate = [], [], 0, 0
    for image_id, name in enumerate(tqdm(names, desc="VisDrone -> COCO", disable=not progress), start=1):
        h, w = read_image_size(os.path.join(image_dir, name))
        images.append({"id": image_id, "file_name": name, "height": h, "width": w})
        txt = os.path.join(ann_dir, os.path.splitext(name)[0] + ".txt")
        if not os.path.isfile(txt):
            missing += 1
            continue
        for row in parse_annotation_file(txt):
            if row["bbox"][2] <= 0 or row["bbox"][3] <= 0:
                degenerate += 1
                continue
            annotations.append(_annotation(row, len(annotations) + 1, image_id))
    if missing:
        logger.warning(f"{ann_dir}: {missing} images have no annotation file (kept, without objects)")
    if degenerate:
        logger.warning(f"{ann_dir}: dropped {degenerate} boxes of zero width or height")
    return {"info": {"description": f"VisDrone-DET converted by sniper_d2 from {root}"},
            "images": images, "annotations": annotations, "categories": VISDRONE_CATEGORIES}
