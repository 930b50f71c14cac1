"""Georeferenced rasters + vector labels (map coordinates) -> COCO json (pixel coordinates).

Each raster (a GeoTIFF orthomosaic, say) becomes one COCO image, whatever its size: SNIPER cuts its
chips from the raster itself. Labels are polygons or boxes in any CRS, in any vector format GDAL
reads (GeoJSON, GeoPackage, shapefile); a field names each feature's class. Documented choices:

- a feature's box is the extent of its polygon, reprojected into the raster's CRS (vertices only)
  and mapped to pixels through the raster's inverse geotransform; boxes cut by the raster's edge
  are clipped (and counted); features outside every raster that reads them are counted, not kept;
- one label file may serve several rasters (each takes the features that overlap it), or each
  raster has its own file;
- categories are the class names found, sorted, with ids 1..K, unless the caller names them (then
  features of another class are an error naming the file and the class);
- each image entry also carries ``"geo": {"crs", "transform"}`` (the raster's georeference), so that
  detections on it can be written back in map coordinates.
"""

import logging
import os
from collections import Counter

import numpy as np

from ..coco import boxes_xyxy_to_xywh
from ..geo import GeoError, labels_to_pixel_boxes, read_georeference, read_vector_labels

__all__ = ["convert_rasters"]

logger = logging.getLogger(__name__)


def _pair(rasters, label_files):
    if not rasters:
        raise GeoError("no raster given")
    if len(label_files) == 1:
        return [(r, label_files[0]) for r in rasters]
    if len(label_files) != len(rasters):
        raise GeoError(f"{len(rasters)} rasters but {len(label_files)} label files: give one label file for "
                       "all rasters, or one per raster in the same order")
    return list(zip(rasters, label_files))


def convert_rasters(rasters, label_files, json_dir, class_field="class", classes=None, layer=None,
                    progress=True):
    """Convert georeferenced rasters and their vector labels into one COCO dict.

    Args:
        rasters (list[str]): raster files (each must have a CRS and a geotransform).
        label_files (list[str]): one vector file for all rasters, or one per raster.
        json_dir (str): the folder of the json to be written: image ``file_name``s are relative to it.
        class_field (str): the attribute naming each feature's class.
        classes (list[str] or None): category names in id order (ids 1..K); None: the sorted names found.
        layer (str or None): the layer to read in multi-layer files (GeoPackage); None: the first.

    Returns:
        (coco, report): the COCO dict, and a dict of counts: ``images``, ``objects``, ``outside``
        (features overlapping no raster that reads them), ``clipped``, ``skipped`` (by reason).

    Raises:
        GeoError: a raster without georeference, a label file without CRS / features / class field,
            a class not in ``classes``; the message names the file.
    """
    from tqdm import tqdm

    pairs = _pair(list(rasters), list(label_files))
    labels = {}
    for path in dict.fromkeys(lf for _, lf in pairs):
        labels[path] = read_vector_labels(path, class_field=class_field, layer=layer)
    used = {path: np.zeros(len(lab.class_names), bool) for path, lab in labels.items()}
    per_image, clipped = [], 0
    for raster, label_path in tqdm(pairs, desc="rasters", disable=not progress or len(pairs) < 2):
        georef = read_georeference(raster)
        if georef is None:
            raise GeoError(f"{raster}: not georeferenced (no CRS or no geotransform); labels in map "
                           "coordinates cannot be placed on it")
        boxes = labels_to_pixel_boxes(labels[label_path], georef)
        used[label_path] |= boxes.inside
        clipped += boxes.clipped
        per_image.append((raster, georef, boxes))
    found = sorted({str(c) for _, _, b in per_image for c in b.class_names})
    names = list(classes) if classes else found
    ids = {name: i + 1 for i, name in enumerate(names)}
    unknown = [c for c in found if c not in ids]
    if unknown:
        where = next(lf for _, lf in pairs if set(labels[lf].class_names) & set(unknown))
        raise GeoError(f"{where}: classes {unknown} are not among the categories named {names}")

    images, annotations = [], []
    for image_id, (raster, georef, boxes) in enumerate(per_image, start=1):
        images.append({"id": image_id, "file_name": os.path.relpath(os.path.abspath(raster), os.path.abspath(json_dir)),
                       "height": georef.height, "width": georef.width,
                       "geo": {"crs": georef.crs, "transform": list(georef.transform)}})
        xywh = boxes_xyxy_to_xywh(boxes.boxes).astype(np.float64).round(2).tolist()
        for box, name in zip(xywh, boxes.class_names):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": ids[name],
                                "bbox": box, "area": round(box[2] * box[3], 2), "iscrowd": 0})
    skipped = Counter()
    for lab in labels.values():
        skipped.update(lab.skipped)
    outside = int(sum((~u).sum() for u in used.values()))
    report = {"images": len(images), "objects": len(annotations), "outside": outside, "clipped": clipped,
              "skipped": dict(skipped)}
    for path, u in used.items():
        if (~u).any():
            logger.warning(f"{path}: {int((~u).sum())} of {len(u)} features lie outside every raster that "
                           "reads them (not kept)")
    if clipped:
        logger.warning(f"{clipped} boxes were cut by a raster's edge (kept, clipped to it)")
    for path, lab in labels.items():
        if lab.skipped:
            detail = ", ".join(f"{n} {why}" for why, n in lab.skipped.items())
            logger.warning(f"{path}: left out {detail}")
    coco = {"info": {"description": "georeferenced rasters converted by sniper_d2",
                     "label_files": list(labels), "class_field": class_field},
            "images": images, "annotations": annotations,
            "categories": [{"id": i, "name": n, "supercategory": "object"} for n, i in ids.items()]}
    return coco, report
