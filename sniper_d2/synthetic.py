"""A synthetic multi-scale detection data set: the demo's and the tests' default data.

Large images (default 1000-2000 px a side) with textured backgrounds hold objects of three
classes whose sizes span tiny (6-12 px) to large (300+ px) within one image, plus look-alike
*distractors* (same colours and textures, other shapes) that are not objects, and some images
with no objects at all. Everything is deterministic given the seed.

Written as COCO json + JPEG images. Each json image entry also carries ``"distractors"``: the
distractor regions as COCO ``[x, y, w, h]`` boxes, so tests can check where negative chips land.
Requires numpy and OpenCV.
"""

import logging
import os
from dataclasses import dataclass

import cv2
import numpy as np

from .coco import boxes_xyxy_to_xywh
from .io import atomic_open, stable_hash

__all__ = ["SyntheticSpec", "DenseSpec", "CATEGORIES", "DENSE_CATEGORIES", "render_image", "dense_layout",
           "render_dense_image", "dense_records", "make_synthetic_dataset"]

logger = logging.getLogger(__name__)

CATEGORIES = [
    {"id": 1, "name": "disk", "supercategory": "shape"},
    {"id": 2, "name": "square", "supercategory": "shape"},
    {"id": 3, "name": "triangle", "supercategory": "shape"},
]
# Object colours (BGR). Distractors reuse them so that colour alone does not separate the two.
_PALETTE = np.array([[40, 40, 220], [220, 120, 30], [30, 200, 230], [200, 40, 200]], dtype=np.uint8)


@dataclass
class SyntheticSpec:
    """What to generate.

    Attributes:
        num_images: images in the split.
        min_side_px, max_side_px: range of each image side, in pixels.
        objects_per_image: (lo, hi) number of objects in an image that has objects.
        distractors_per_image: (lo, hi) number of look-alike non-objects per image.
        empty_fraction: fraction of images without any object (distractors only), spread evenly.
        min_object_px, max_object_px: range of object size sqrt(w*h), drawn log-uniformly; every
            non-empty image also gets one object in [min, 2*min) and one in [max*0.75, max].
        seed: base seed; image i uses seed + i.
    """

    num_images: int = 24
    min_side_px: int = 1000
    max_side_px: int = 2000
    objects_per_image: tuple = (8, 20)
    distractors_per_image: tuple = (4, 10)
    empty_fraction: float = 0.1
    min_object_px: float = 6.0
    max_object_px: float = 400.0
    seed: int = 0


# The dense single-band set has one class (as in aerial vehicle counting).
DENSE_CATEGORIES = [{"id": 1, "name": "car", "supercategory": "shape"}]


@dataclass
class DenseSpec:
    """A dense single-band data set: many objects of one class, all within about one size band
    (like vehicles in aerial images), spread over most of each image. Where SNIPER saves little.

    Attributes:
        num_images: images in the split.
        min_side_px, max_side_px: range of each image side, in pixels.
        objects_per_image: (lo, hi) objects placed per image (fewer when the image is full).
        median_object_px, sigma: object size sqrt(w*h) is log-normal around the median ...
        min_object_px, max_object_px: ... clipped to this range.
        distractors_per_image: (lo, hi) look-alike non-objects (rings, crosses) per image.
        seed: base seed; image i uses seed + i.
    """

    num_images: int = 2
    min_side_px: int = 2200
    max_side_px: int = 2500
    objects_per_image: tuple = (520, 600)
    median_object_px: float = 40.0
    sigma: float = 0.5
    min_object_px: float = 8.0
    max_object_px: float = 110.0
    distractors_per_image: tuple = (10, 20)
    seed: int = 0


def dense_layout(spec, index):
    """Image size and boxes of image ``index`` of a :class:`DenseSpec` split, without pixels.

    Returns:
        (height, width, boxes (N, 4) float32 XYXY original pixels, distractors (M, 4) float32, rng)
    """
    rng = np.random.default_rng(spec.seed * 100003 + index)
    height = int(rng.integers(spec.min_side_px, spec.max_side_px + 1))
    width = int(rng.integers(spec.min_side_px, spec.max_side_px + 1))
    n = int(rng.integers(spec.objects_per_image[0], spec.objects_per_image[1] + 1))
    sizes = np.clip(np.exp(rng.normal(np.log(spec.median_object_px), spec.sigma, n)),
                    spec.min_object_px, spec.max_object_px)
    boxes, occupied = _place_boxes(rng, np.sort(sizes)[::-1], height, width, [])
    n_dis = int(rng.integers(spec.distractors_per_image[0], spec.distractors_per_image[1] + 1))
    dis_sizes = np.exp(rng.uniform(np.log(spec.min_object_px * 1.5), np.log(spec.max_object_px), n_dis))
    distractors, _ = _place_boxes(rng, np.sort(dis_sizes)[::-1], height, width, occupied)
    return height, width, boxes, distractors, rng


def render_dense_image(spec, index):
    """Render image ``index`` of a :class:`DenseSpec` split (same outputs as :func:`render_image`)."""
    height, width, boxes, distractors, rng = dense_layout(spec, index)
    image = _textured_background(rng, height, width)
    for box in boxes:
        _draw_shape(image, ("disk", "square", "triangle")[int(rng.integers(3))], box,
                    _PALETTE[rng.integers(len(_PALETTE))])
    for box in distractors:
        _draw_shape(image, ("ring", "cross")[int(rng.integers(2))], box, _PALETTE[rng.integers(len(_PALETTE))])
    return image, boxes, np.ones(len(boxes), np.int64), distractors


def dense_records(spec):
    """The records (as :func:`sniper_d2.coco.load_coco_records` returns) of a dense split, without
    rendering or writing images: for statistics and planning."""
    records = []
    for i in range(spec.num_images):
        height, width, boxes, distractors, _ = dense_layout(spec, i)
        records.append({"image_id": i + 1, "file_name": f"dense_{i:05d}.jpg", "height": height, "width": width,
                        "boxes": boxes, "category_ids": np.ones(len(boxes), np.int64),
                        "iscrowd": np.zeros(len(boxes), bool), "distractors": distractors})
    return records


def _textured_background(rng, height, width):
    """(H, W, 3) uint8: multi-octave value noise, tinted, with a few soft stripes."""
    bg = np.zeros((height, width), np.float32)
    for octave, weight in ((8, 0.5), (32, 0.3), (128, 0.2)):
        small = rng.random((octave, octave), dtype=np.float32)
        bg += weight * cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    bg += 0.08 * rng.standard_normal((height, width), dtype=np.float32)
    tint = rng.uniform(0.4, 0.9, size=3).astype(np.float32)
    img = np.clip(bg[..., None] * tint * 255.0, 0, 255)
    return img.astype(np.uint8)


def _draw_shape(img, kind, box, color):
    """Draw one filled shape inside box (x0, y0, x1, y1, original pixels)."""
    x0, y0, x1, y1 = box
    c = tuple(int(v) for v in color)
    shift = 4  # sub-pixel precision for small shapes
    s = 1 << shift
    if kind == "disk":
        center = (int((x0 + x1) / 2 * s), int((y0 + y1) / 2 * s))
        axes = (int((x1 - x0) / 2 * s), int((y1 - y0) / 2 * s))
        cv2.ellipse(img, center, axes, 0, 0, 360, c, -1, cv2.LINE_AA, shift)
    elif kind == "square":
        pts = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]) * s
        cv2.fillPoly(img, [pts.astype(np.int32)], c, cv2.LINE_AA, shift)
    elif kind == "triangle":
        pts = np.array([[(x0 + x1) / 2, y0], [x1, y1], [x0, y1]]) * s
        cv2.fillPoly(img, [pts.astype(np.int32)], c, cv2.LINE_AA, shift)
    elif kind == "ring":  # distractor: a disk's outline
        center = (int((x0 + x1) / 2 * s), int((y0 + y1) / 2 * s))
        axes = (int((x1 - x0) / 2 * s), int((y1 - y0) / 2 * s))
        thickness = max(1, int(round(0.12 * (x1 - x0))))
        cv2.ellipse(img, center, axes, 0, 0, 360, c, thickness, cv2.LINE_AA, shift)
    elif kind == "cross":  # distractor: a plus sign
        w, h = x1 - x0, y1 - y0
        bars = [np.array([[x0, y0 + 0.35 * h], [x1, y0 + 0.35 * h], [x1, y0 + 0.65 * h], [x0, y0 + 0.65 * h]]),
                np.array([[x0 + 0.35 * w, y0], [x0 + 0.65 * w, y0], [x0 + 0.65 * w, y1], [x0 + 0.35 * w, y1]])]
        cv2.fillPoly(img, [(b * s).astype(np.int32) for b in bars], c, cv2.LINE_AA, shift)
    else:
        raise ValueError(f"unknown shape {kind!r}")


def _place_boxes(rng, sizes, height, width, occupied):
    """Place square-ish boxes of the given sqrt-area sizes without overlapping `occupied`.

    Returns (K, 4) float32 XYXY boxes (K <= len(sizes): a box that finds no free place after a
    few tries is left out) and the updated list of occupied boxes.
    """
    placed = []
    for size in sizes:
        aspect = rng.uniform(0.75, 1.33)
        w, h = size * np.sqrt(aspect), size / np.sqrt(aspect)
        if w >= width - 2 or h >= height - 2:
            continue
        for _ in range(30):
            x0, y0 = rng.uniform(1, width - w - 1), rng.uniform(1, height - h - 1)
            cand = np.array([x0, y0, x0 + w, y0 + h], np.float32)
            if occupied:
                occ = np.asarray(occupied)
                margin = 0.1 * size + 2
                overlap = ((occ[:, 0] < cand[2] + margin) & (occ[:, 2] > cand[0] - margin)
                           & (occ[:, 1] < cand[3] + margin) & (occ[:, 3] > cand[1] - margin))
                if overlap.any():
                    continue
            placed.append(cand)
            occupied.append(cand)
            break
    return np.asarray(placed, np.float32).reshape(-1, 4), occupied


def render_image(spec, index):
    """Render image ``index`` of a split.

    Returns:
        image: (H, W, 3) uint8 BGR.
        boxes: (N, 4) float32 XYXY, original pixels; category_ids: (N,) int64 (1..3).
        distractors: (M, 4) float32 XYXY.
    """
    rng = np.random.default_rng(spec.seed * 100003 + index)
    height = int(rng.integers(spec.min_side_px, spec.max_side_px + 1))
    width = int(rng.integers(spec.min_side_px, spec.max_side_px + 1))
    image = _textured_background(rng, height, width)
    occupied = []
    # Exactly round(num_images * empty_fraction) images are empty, spread evenly over the split.
    has_objects = int((index + 1) * spec.empty_fraction) == int(index * spec.empty_fraction)
    boxes = np.zeros((0, 4), np.float32)
    cats = np.zeros((0,), np.int64)
    if has_objects:
        n = int(rng.integers(spec.objects_per_image[0], spec.objects_per_image[1] + 1))
        lo, hi = np.log(spec.min_object_px), np.log(spec.max_object_px)
        sizes = np.exp(rng.uniform(lo, hi, size=max(0, n - 2)))
        hi_px = min(spec.max_object_px, 0.45 * min(height, width))
        extremes = [rng.uniform(spec.min_object_px, 2 * spec.min_object_px),
                    rng.uniform(0.75 * hi_px, hi_px)]
        # Place the largest first, so they find room.
        sizes = np.sort(np.concatenate([extremes, sizes]))[::-1]
        boxes, occupied = _place_boxes(rng, sizes, height, width, occupied)
        cats = rng.integers(1, len(CATEGORIES) + 1, size=len(boxes)).astype(np.int64)
    n_dis = int(rng.integers(spec.distractors_per_image[0], spec.distractors_per_image[1] + 1))
    dis_sizes = np.exp(rng.uniform(np.log(max(spec.min_object_px, 10)), np.log(spec.max_object_px / 2), n_dis))
    distractors, occupied = _place_boxes(rng, np.sort(dis_sizes)[::-1], height, width, occupied)
    names = [c["name"] for c in CATEGORIES]
    for box, cat in zip(boxes, cats):
        _draw_shape(image, names[cat - 1], box, _PALETTE[rng.integers(len(_PALETTE))])
    for box in distractors:
        kind = ("ring", "cross")[int(rng.integers(2))]
        _draw_shape(image, kind, box, _PALETTE[rng.integers(len(_PALETTE))])
    return image, boxes, cats, distractors


def make_synthetic_dataset(output_dir, split, spec, progress=True):
    """Write ``<output_dir>/images/<split>_*.jpg`` and ``<output_dir>/<split>.json``.

    ``spec`` is a :class:`SyntheticSpec` (three classes, sizes spanning tiny to large) or a
    :class:`DenseSpec` (one class, dense, one size band).

    Returns:
        str: path of the json. The json is written atomically and last, so its presence means
        the split is complete; an existing json with the same spec is reused as is.
    """
    from tqdm import tqdm

    json_path = os.path.join(output_dir, f"{split}.json")
    spec_hash = stable_hash({"kind": "dense", **vars(spec)} if isinstance(spec, DenseSpec) else vars(spec))
    if os.path.isfile(json_path):
        import json

        with open(json_path) as f:
            try:
                existing = json.load(f)
            except json.JSONDecodeError:
                existing = {}
        if existing.get("info", {}).get("spec_hash") == spec_hash:
            logger.info(f"{json_path} already holds this split (spec {spec_hash}); reusing it")
            return json_path
    image_dir = os.path.join(output_dir, "images")
    os.makedirs(image_dir, exist_ok=True)
    images, annotations = [], []
    dense = isinstance(spec, DenseSpec)
    render, categories = (render_dense_image, DENSE_CATEGORIES) if dense else (render_image, CATEGORIES)
    for i in tqdm(range(spec.num_images), desc=f"synthetic {split}", disable=not progress):
        image, boxes, cats, distractors = render(spec, i)
        file_name = f"{split}_{i:05d}.jpg"
        path = os.path.join(image_dir, file_name)
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 92])
        if not ok:
            raise RuntimeError(f"{path}: JPEG encoding failed")
        with atomic_open(path, "wb") as f:
            f.write(buf.tobytes())
        image_id = i + 1
        images.append({"id": image_id, "file_name": file_name, "height": image.shape[0],
                       "width": image.shape[1],
                       "distractors": boxes_xyxy_to_xywh(distractors).round(2).tolist()})
        for box, cat in zip(boxes_xyxy_to_xywh(boxes), cats):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": int(cat), "bbox": [round(float(v), 2) for v in box],
                                "area": round(float(box[2] * box[3]), 2), "iscrowd": 0})
    kind = "dense single-band" if dense else "multi-scale"
    coco = {"info": {"description": f"sniper_d2 synthetic {kind} data, split {split}",
                     "spec": vars(spec), "spec_hash": spec_hash},
            "images": images, "annotations": annotations, "categories": categories}
    import json

    with atomic_open(json_path, "w") as f:
        json.dump(coco, f)
    logger.info(f"wrote {json_path}: {len(images)} images, {len(annotations)} objects")
    return json_path
