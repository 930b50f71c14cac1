#!/usr/bin/env python
"""Convert georeferenced rasters + vector labels in map coordinates to one COCO json (pixel boxes).

Each raster (a GeoTIFF orthomosaic of any size) becomes one image; labels are polygons or boxes in
any CRS and any vector format GDAL reads (GeoJSON, GeoPackage, shapefile), reprojected to each
raster's CRS; the field --class-field names each feature's class. Features outside every raster are
counted and reported. One label file may serve all rasters, or give one per raster (same order).
See sniper_d2/converters/geo.py for every choice. The json is written atomically.

Example:
    python tools/convert_geo.py --raster datasets/ortho/ortho.tif \\
        --labels datasets/ortho/ortho_labels.geojson --output datasets/ortho/train.json
    python tools/convert_geo.py --raster site1.tif site2.tif --labels trees.gpkg \\
        --class-field species --output datasets/trees/train.json
"""

import argparse
import json
import logging
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from sniper_d2.cli import run_main  # noqa: E402
from sniper_d2.converters.geo import convert_rasters  # noqa: E402
from sniper_d2.io import atomic_open  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--raster", nargs="+", required=True, help="georeferenced rasters (GeoTIFF, ...)")
    p.add_argument("--labels", nargs="+", required=True,
                   help="vector label files: one for all rasters, or one per raster in the same order")
    p.add_argument("--output", required=True, help="COCO json to write (image paths are relative to its folder)")
    p.add_argument("--class-field", default="class", help="attribute naming each feature's class (default: %(default)s)")
    p.add_argument("--classes", nargs="+",
                   help="category names in id order (ids 1..K; default: the sorted names found). Use it to give "
                        "several jsons (train, val) the same ids")
    p.add_argument("--layer", help="layer of a multi-layer file such as a GeoPackage (default: the first)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s]: %(message)s", datefmt="%m/%d %H:%M:%S")
    # A GeoError (no CRS, unknown class field, empty file, ...) ends the program in one line (run_main).
    coco, report = convert_rasters(args.raster, args.labels, os.path.dirname(os.path.abspath(args.output)),
                                   class_field=args.class_field, classes=args.classes, layer=args.layer)
    with atomic_open(args.output, "w") as f:
        json.dump(coco, f)
    skipped = sum(report["skipped"].values())
    print(f"{args.output}: {report['images']} rasters, {report['objects']} objects in "
          f"{len(coco['categories'])} classes ({', '.join(c['name'] for c in coco['categories'])}); "
          f"{report['outside']} features outside the rasters, {report['clipped']} clipped at an edge, "
          f"{skipped} skipped (no geometry, not polygons or no class)")


if __name__ == "__main__":
    run_main(main, "convert_geo.py")
