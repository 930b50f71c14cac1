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
           "render_dense_image", "dense_records", "make_synthetic_dataset", "OrthoSpec", "ortho_transform",
           "ortho_footprint", "ortho_layout", "render_ortho_window", "make_synthetic_ortho"]

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


# ----------------------------------------------------------------------------------------------
# A GDAL-style synthetic orthomosaic: one large georeferenced raster written by windows.


@dataclass
class OrthoSpec:
    """A synthetic orthomosaic as photogrammetry tools write them (see :func:`make_synthetic_ortho`).

    The layout is a grid of ``cell_px`` cells: blocks of ``large_block_cells`` x ``large_block_cells``
    cells hold one large object with probability ``large_fraction``; every other cell holds one small
    object with probability ``small_fraction`` or a distractor with ``distractor_fraction``. Objects
    never overlap. Objects not entirely inside the valid (not nodata) footprint are left out.

    Attributes:
        width_px, height_px: raster size, pixels.
        pixel_size_m: ground sampling distance, metres per pixel (square pixels, north up).
        crs: the raster's CRS (a projected CRS in metres).
        origin_m: map (x, y) of the raster's top-left corner, in ``crs`` units.
        cell_px, small_fraction, small_object_px: small objects' grid and sqrt(w*h) range.
        large_block_cells, large_fraction, large_object_px: large objects' blocks and size range.
        distractor_fraction: look-alike non-objects (rings, crosses) per free cell.
        border_fraction: depth of the nodata border as a fraction of the shorter side (the valid
            footprint is an octagon: the raster minus the border, with randomly cut corners).
        tile_px: TIFF tile side (and the writing window's granularity).
        jpeg_quality: JPEG quality of the YCbCr tiles.
        seed: everything is deterministic given it.
    """

    width_px: int = 1500
    height_px: int = 1500
    pixel_size_m: float = 0.05
    crs: str = "EPSG:32611"
    origin_m: tuple = (500000.0, 3762000.0)
    cell_px: int = 64
    small_fraction: float = 0.3
    small_object_px: tuple = (8.0, 40.0)
    large_block_cells: int = 4
    large_fraction: float = 0.08
    large_object_px: tuple = (60.0, 200.0)
    distractor_fraction: float = 0.05
    border_fraction: float = 0.05
    tile_px: int = 512
    jpeg_quality: int = 90
    seed: int = 0


ORTHO_FORMAT = "sniper_d2.synthetic_ortho"
# GDAL's block cache while writing (MB): bounds the writer's memory whatever the raster's size.
ORTHO_GDAL_CACHE_MB = 256
ORTHO_VERSION = 1


def ortho_transform(spec):
    """The raster's affine ``(a, b, c, d, e, f)``: north up, ``pixel_size_m`` square pixels."""
    x0, y0 = spec.origin_m
    return (float(spec.pixel_size_m), 0.0, float(x0), 0.0, -float(spec.pixel_size_m), float(y0))


def ortho_footprint(spec):
    """The valid-data footprint: (8, 2) float64 pixel points of a convex octagon, clockwise on screen."""
    rng = np.random.default_rng([spec.seed, 1])
    w, h = spec.width_px, spec.height_px
    b = spec.border_fraction * min(w, h)
    cut = rng.uniform(0.5, 3.0, size=4) * b
    x0, y0, x1, y1 = b, b, w - b, h - b
    return np.array([[x0 + cut[0], y0], [x1 - cut[1], y0], [x1, y0 + cut[1]], [x1, y1 - cut[2]],
                     [x1 - cut[2], y1], [x0 + cut[3], y1], [x0, y1 - cut[3]], [x0, y0 + cut[0]]])


def _inside_convex(points, polygon):
    """(M,) bool: points (M, 2) inside (or on) a convex polygon (K, 2) listed clockwise on screen."""
    edge = np.roll(polygon, -1, axis=0) - polygon  # (K, 2)
    rel = points[:, None, :] - polygon[None]  # (M, K, 2)
    cross = edge[None, :, 0] * rel[..., 1] - edge[None, :, 1] * rel[..., 0]
    return (cross >= 0).all(axis=1)


def _boxes_in_cells(rng, origins, cell, size_range):
    """One box per cell origin (M, 2), size log-uniform in size_range (clipped to the cell minus a
    margin), aspect 0.75-1.33, placed uniformly inside the cell. Returns (M, 4) float64 XYXY."""
    m = len(origins)
    size = np.exp(rng.uniform(np.log(size_range[0]), np.log(size_range[1]), m))
    aspect = rng.uniform(0.75, 1.33, m)
    w = np.minimum(size * np.sqrt(aspect), cell - 4)
    h = np.minimum(size / np.sqrt(aspect), cell - 4)
    x0 = origins[:, 0] + 2 + rng.random(m) * (cell - 4 - w)
    y0 = origins[:, 1] + 2 + rng.random(m) * (cell - 4 - h)
    return np.stack([x0, y0, x0 + w, y0 + h], axis=1)


def ortho_layout(spec):
    """The objects of an :class:`OrthoSpec` raster, without pixels (vectorized; no per-box loop).

    Returns:
        dict with ``boxes`` (N, 4) float32 XYXY raster pixels, ``category_ids`` (N,) int64 in
        1..3 (:data:`CATEGORIES`), ``colors`` (N,) int64 palette indices, ``distractors`` (M, 4)
        float32, ``distractor_kinds`` (M,) int64 (0 ring, 1 cross), ``distractor_colors`` (M,),
        ``footprint`` (8, 2) float64 pixel points.
    """
    rng = np.random.default_rng([spec.seed, 2])
    cell, k = spec.cell_px, spec.large_block_cells
    rows, cols = spec.height_px // cell, spec.width_px // cell
    # Large objects: one per chosen k x k block; its cells are taken.
    brows, bcols = rows // k, cols // k
    large = rng.random((brows, bcols)) < spec.large_fraction
    taken = np.zeros((rows, cols), bool)
    taken[:brows * k, :bcols * k] = np.repeat(np.repeat(large, k, 0), k, 1)
    bi, bj = np.nonzero(large)
    large_boxes = _boxes_in_cells(rng, np.stack([bj, bi], 1).astype(np.float64) * cell * k, cell * k,
                                  spec.large_object_px)
    draw = rng.random((rows, cols))
    small = ~taken & (draw < spec.small_fraction)
    dis = ~taken & (draw >= spec.small_fraction) & (draw < spec.small_fraction + spec.distractor_fraction)
    si, sj = np.nonzero(small)
    small_boxes = _boxes_in_cells(rng, np.stack([sj, si], 1).astype(np.float64) * cell, cell, spec.small_object_px)
    di, dj = np.nonzero(dis)
    dis_boxes = _boxes_in_cells(rng, np.stack([dj, di], 1).astype(np.float64) * cell, cell,
                                (max(10.0, spec.small_object_px[0]), spec.small_object_px[1]))
    footprint = ortho_footprint(spec)

    def inside(b):
        corners = b[:, [0, 1, 2, 1, 2, 3, 0, 3]].reshape(-1, 2)
        return _inside_convex(corners, footprint).reshape(-1, 4).all(axis=1)

    boxes = np.concatenate([large_boxes, small_boxes])
    boxes = boxes[inside(boxes)]
    dis_boxes = dis_boxes[inside(dis_boxes)]
    return {"boxes": boxes.astype(np.float32),
            "category_ids": rng.integers(1, len(CATEGORIES) + 1, len(boxes)).astype(np.int64),
            "colors": rng.integers(len(_PALETTE), size=len(boxes)).astype(np.int64),
            "distractors": dis_boxes.astype(np.float32),
            "distractor_kinds": rng.integers(2, size=len(dis_boxes)).astype(np.int64),
            "distractor_colors": rng.integers(len(_PALETTE), size=len(dis_boxes)).astype(np.int64),
            "footprint": footprint}


class _OrthoTexture:
    """A seamless, position-dependent background: value noise on three lattices (spacings 512, 128
    and 32 px) interpolated at each pixel, fine grain from a fixed noise tile, and a slowly varying
    tint. Any window is rendered alone, in memory proportional to the window."""

    SPACINGS_PX = (512, 128, 32)
    WEIGHTS = (0.5, 0.3, 0.2)
    GRAIN = (509, 521)  # coprime tile sides, so the grain does not repeat visibly

    def __init__(self, spec):
        rng = np.random.default_rng([spec.seed, 3])
        self.lattices = [rng.random((spec.height_px // s + 3, spec.width_px // s + 3), dtype=np.float32)
                         for s in self.SPACINGS_PX]
        self.tint_field = rng.random((spec.height_px // 2048 + 3, spec.width_px // 2048 + 3), dtype=np.float32)
        self.tints = rng.uniform(0.4, 0.9, size=(2, 3)).astype(np.float32)
        self.grain = 0.08 * rng.standard_normal(self.GRAIN, dtype=np.float32)

    @staticmethod
    def _interp(lattice, spacing, ys, xs):
        fy, fx = (ys + 0.5) / spacing, (xs + 0.5) / spacing
        iy, ix = np.floor(fy).astype(np.int64), np.floor(fx).astype(np.int64)
        ty, tx = fy - iy, fx - ix
        ty, tx = (ty * ty * (3 - 2 * ty))[:, None], (tx * tx * (3 - 2 * tx))[None, :]
        # Separable: along x on the few lattice rows the window needs, then along y by whole rows.
        r0 = int(iy.min())
        rows = lattice[r0:int(iy.max()) + 2]
        along_x = rows[:, ix] * (1 - tx) + rows[:, ix + 1] * tx  # (lattice rows, width)
        return along_x[iy - r0] * (1 - ty) + along_x[iy - r0 + 1] * ty

    def render(self, x0, y0, width, height):
        """(height, width, 3) uint8 BGR background of the window at pixel (x0, y0)."""
        ys = np.arange(y0, y0 + height, dtype=np.float32)
        xs = np.arange(x0, x0 + width, dtype=np.float32)
        value = np.zeros((height, width), np.float32)
        for lattice, spacing, weight in zip(self.lattices, self.SPACINGS_PX, self.WEIGHTS):
            value += weight * self._interp(lattice, spacing, ys, xs)
        iy = np.arange(y0, y0 + height) % self.GRAIN[0]
        ix = np.arange(x0, x0 + width) % self.GRAIN[1]
        value += self.grain[np.ix_(iy, ix)]
        mix = self._interp(self.tint_field, 2048, ys, xs)[..., None]
        tint = self.tints[0] * (1 - mix) + self.tints[1] * mix
        return np.clip(value[..., None] * tint * 255.0, 0, 255).astype(np.uint8)


def render_ortho_window(spec, layout, texture, x0, y0, width, height):
    """Pixels and valid-data mask of one window of the orthomosaic.

    Args:
        layout: from :func:`ortho_layout`; texture: an ``_OrthoTexture`` of the same spec.
        x0, y0, width, height: the window, raster pixels.

    Returns:
        image: (height, width, 3) uint8 RGB, black outside the footprint;
        mask: (height, width) uint8, 255 where the data is valid, 0 in the nodata border.
    """
    # Objects are drawn on the window plus a margin and cropped: cv2 anti-aliases a shape cut by the
    # canvas edge differently, which would leave seams between windows.
    pad = 2
    image = cv2.copyMakeBorder(texture.render(x0, y0, width, height), pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    offset = np.array([x0 - pad, y0 - pad, x0 - pad, y0 - pad], np.float32)
    names = [c["name"] for c in CATEGORIES]
    for boxes, kinds, colors in ((layout["boxes"], [names[c - 1] for c in layout["category_ids"]],
                                  layout["colors"]),
                                 (layout["distractors"], [("ring", "cross")[k] for k in layout["distractor_kinds"]],
                                  layout["distractor_colors"])):
        hit = np.nonzero((boxes[:, 2] > x0) & (boxes[:, 0] < x0 + width)
                         & (boxes[:, 3] > y0) & (boxes[:, 1] < y0 + height))[0]
        for i in hit:  # drawing is one cv2 call per object; only the objects of this window
            _draw_shape(image, kinds[i], boxes[i] - offset, _PALETTE[colors[i]])
    image = image[pad:pad + height, pad:pad + width]
    mask = np.zeros((height, width), np.uint8)
    shift = 4
    pts = np.round((layout["footprint"] - [x0, y0]) * (1 << shift)).astype(np.int32)
    cv2.fillPoly(mask, [pts], 255, cv2.LINE_8, shift)
    image[mask == 0] = 0
    return image[..., ::-1], mask


def _ortho_profile(spec):
    from rasterio.transform import Affine

    a, b, c, d, e, f = ortho_transform(spec)
    return {"driver": "GTiff", "width": spec.width_px, "height": spec.height_px, "count": 3, "dtype": "uint8",
            "crs": spec.crs, "transform": Affine(a, b, c, d, e, f), "tiled": True,
            "blockxsize": spec.tile_px, "blockysize": spec.tile_px, "compress": "JPEG", "photometric": "YCBCR",
            "jpeg_quality": spec.jpeg_quality, "interleave": "pixel", "bigtiff": "IF_SAFER"}


def _existing_ortho_hash(path):
    if not os.path.isfile(path):
        return None
    import rasterio

    try:
        with rasterio.open(path) as ds:
            tags = ds.tags()
    except Exception:  # an unreadable leftover: regenerate it
        return None
    return tags.get("SNIPER_D2_SPEC_HASH")


def make_synthetic_ortho(output_dir, spec, name="ortho", labels_crs=None, progress=True):
    """Write a GDAL-style orthomosaic and its labels.

    Files (in ``output_dir``):
    - ``<name>.tif``: tiled (``tile_px``) JPEG/YCbCr GeoTIFF (BigTIFF when needed) in ``spec.crs``
      with the geotransform of :func:`ortho_transform`, an internal nodata mask (what GDAL writes
      with ``GDAL_TIFF_INTERNAL_MASK=YES``; pixels outside are black), internal overviews (2, 4, ...
      down to one tile, averaged), and tags ``SNIPER_D2_FORMAT`` / ``_VERSION`` / ``_SPEC_HASH``.
      Written window by window (memory: a window of 4 x 4 tiles plus GDAL's cache, ORTHO_GDAL_CACHE_MB), to a temporary name
      renamed into place.
    - ``<name>_labels.geojson``: one polygon per object in map coordinates (``labels_crs``, default
      the raster's CRS), with property ``class`` (disk, square, triangle), as a GIS exports them.
    - ``<name>_truth.json``: the same objects as COCO json in pixel coordinates (the raster is its
      one image), for checking converters; distractors are listed per image as in the other sets.

    An existing raster with the same spec is reused (the labels are rewritten: cheap).

    Returns:
        dict with ``raster``, ``labels``, ``truth`` (paths) and ``num_objects``.
    """
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.windows import Window
    from tqdm import tqdm

    from .geo import Georeference, atomic_output_path, crs_name, write_boxes_vector

    os.makedirs(output_dir, exist_ok=True)
    raster = os.path.join(output_dir, f"{name}.tif")
    spec_hash = stable_hash({"kind": "ortho", "version": ORTHO_VERSION, **vars(spec)})
    layout = ortho_layout(spec)
    if _existing_ortho_hash(raster) == spec_hash:
        logger.info(f"{raster} already holds this orthomosaic (spec {spec_hash}); reusing it")
    else:
        texture = _OrthoTexture(spec)
        step = 4 * spec.tile_px
        windows = [(x, y, min(step, spec.width_px - x), min(step, spec.height_px - y))
                   for y in range(0, spec.height_px, step) for x in range(0, spec.width_px, step)]
        with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True, GDAL_CACHEMAX=ORTHO_GDAL_CACHE_MB), atomic_output_path(raster) as tmp:
            with rasterio.open(tmp, "w", **_ortho_profile(spec)) as dst:
                dst.update_tags(SNIPER_D2_FORMAT=ORTHO_FORMAT, SNIPER_D2_VERSION=str(ORTHO_VERSION),
                                SNIPER_D2_SPEC_HASH=spec_hash)
                for x, y, w, h in tqdm(windows, desc=f"ortho {spec.width_px}x{spec.height_px}",
                                       disable=not progress):
                    image, mask = render_ortho_window(spec, layout, texture, x, y, w, h)
                    win = Window(x, y, w, h)
                    dst.write(image.transpose(2, 0, 1), window=win)
                    dst.write_mask(mask, window=win)
            factors = []
            while max(spec.width_px, spec.height_px) / (2 ** (len(factors) + 1)) >= spec.tile_px / 2:
                factors.append(2 ** (len(factors) + 1))
            if factors:
                logger.info(f"building overviews {factors} of {raster}")
                with rasterio.open(tmp, "r+") as dst:
                    dst.build_overviews(factors, Resampling.average)
                    dst.update_tags(ns="rio_overview", resampling="average")
    georef = Georeference(crs_name(spec.crs), ortho_transform(spec), spec.height_px, spec.width_px, raster)
    names = np.array([c["name"] for c in CATEGORIES], dtype=object)
    labels = os.path.join(output_dir, f"{name}_labels.geojson")
    write_boxes_vector(labels, georef, layout["boxes"], {"class": names[layout["category_ids"] - 1]},
                       dst_crs=labels_crs, layer="labels", extra={"spec_hash": spec_hash})
    truth = os.path.join(output_dir, f"{name}_truth.json")
    boxes_xywh = boxes_xyxy_to_xywh(layout["boxes"]).round(2)
    coco = {"info": {"description": f"sniper_d2 synthetic orthomosaic {name}", "spec": vars(spec),
                     "spec_hash": spec_hash},
            "images": [{"id": 1, "file_name": f"{name}.tif", "height": spec.height_px, "width": spec.width_px,
                        "distractors": boxes_xyxy_to_xywh(layout["distractors"]).round(2).tolist()}],
            "annotations": [{"id": i + 1, "image_id": 1, "category_id": int(c), "bbox": b,
                             "area": round(b[2] * b[3], 2), "iscrowd": 0}
                            for i, (b, c) in enumerate(zip(boxes_xywh.tolist(), layout["category_ids"]))],
            "categories": CATEGORIES}
    import json

    with atomic_open(truth, "w") as f:
        json.dump(coco, f)
    logger.info(f"wrote {raster}, {labels}, {truth}: {len(layout['boxes'])} objects")
    return {"raster": raster, "labels": labels, "truth": truth, "num_objects": len(layout["boxes"])}
