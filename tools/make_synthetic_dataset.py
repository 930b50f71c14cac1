#!/usr/bin/env python
"""Generate the synthetic multi-scale data set (COCO json + JPEG images).

Objects of three classes span 6 px to 400 px (sqrt area) within one image, on textured
backgrounds, with look-alike distractors (rings, crosses) and some object-free images.
Deterministic by seed; re-running with the same arguments reuses what is there.

Example:
    python tools/make_synthetic_dataset.py --output datasets/synthetic --train 24 --val 8 --clutter 6
    # -> datasets/synthetic/{train,val,clutter}.json and datasets/synthetic/images/*.jpg
    python tools/make_synthetic_dataset.py --dense --output datasets/dense --train 2 --val 1
    # -> a dense single-band set (one class, 500+ objects of 8-110 px in ~2300 px images)
    python tools/make_synthetic_dataset.py --ortho --output datasets/ortho --size 1500
    # -> datasets/ortho/ortho.tif (tiled JPEG/YCbCr GeoTIFF, EPSG:32611, 5 cm pixels, nodata mask,
    #    overviews), ortho_labels.geojson (labels in map coordinates), ortho_truth.json (COCO, pixels)
    python tools/make_synthetic_dataset.py --ortho --output datasets/ortho30k --size 30000
    # -> the 30k x 30k benchmark orthomosaic (about 100k objects), written window by window
"""

import argparse
import logging
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from sniper_d2.coco import load_coco_records  # noqa: E402
from sniper_d2.synthetic import (DenseSpec, OrthoSpec, SyntheticSpec, make_synthetic_dataset,  # noqa: E402
                                 make_synthetic_ortho)
from sniper_d2.cli import run_main  # noqa: E402


# The clutter and sparse splits' seeds lie far from those of train (2 * seed) and val (2 * seed + 1).
CLUTTER_SEED_OFFSET = 1_000_000
SPARSE_SEED_OFFSET = 2_000_000


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default="datasets/synthetic", help="output folder (default: %(default)s)")
    p.add_argument("--train", type=int, default=24, help="training images (default: %(default)s)")
    p.add_argument("--val", type=int, default=8, help="validation images (default: %(default)s)")
    p.add_argument("--clutter", type=int, default=0,
                   help="images of a distractor-heavy split 'clutter' (20-40 look-alike non-objects and "
                        "4-8 objects per image), for counting false positives (default: %(default)s)")
    p.add_argument("--sparse", type=int, default=0,
                   help="images of a split 'sparse': 2-4 objects and 2-4 distractors per image, mostly "
                        "background, where AutoFocus pays (default: %(default)s)")
    p.add_argument("--min-side", type=int, help="smallest image side, px (default: 1000; with --dense 2200)")
    p.add_argument("--max-side", type=int, help="largest image side, px (default: 2000; with --dense 2500)")
    p.add_argument("--seed", type=int, default=0, help="base seed (default: %(default)s)")
    p.add_argument("--dense", action="store_true",
                   help="the dense single-band set instead: one class, many objects of 8-110 px (log-normal "
                        "around 40 px) over most of each image; sides default to 2200-2500 px")
    p.add_argument("--objects", type=int, nargs=2, metavar=("LO", "HI"),
                   help="objects per image (default: 8 20; with --dense 520 600)")
    g = p.add_argument_group("orthomosaic (--ortho)")
    g.add_argument("--ortho", action="store_true",
                   help="a GDAL-style orthomosaic instead: one tiled JPEG/YCbCr GeoTIFF with a CRS, a nodata "
                        "border (internal mask) and overviews, plus its labels as GeoJSON in map coordinates")
    g.add_argument("--size", type=int, nargs="+", default=[1500], metavar="PX",
                   help="raster side, px, or WIDTH HEIGHT (default: %(default)s; 30000 for the benchmark)")
    g.add_argument("--pixel-size", type=float, default=0.05, help="metres per pixel (default: %(default)s)")
    g.add_argument("--crs", default="EPSG:32611", help="the raster's projected CRS (default: %(default)s)")
    g.add_argument("--labels-crs", default=None,
                   help="CRS of the GeoJSON labels, e.g. EPSG:4326 (default: the raster's)")
    g.add_argument("--name", default="ortho", help="file name stem (default: %(default)s)")
    args = p.parse_args(argv)
    if len(args.size) > 2 or min(args.size) < 64:
        p.error("--size takes one or two sides of at least 64 px")
    return args


def make_ortho(args):
    """The --ortho branch: write the raster and its labels, print what was written."""
    import resource
    import time

    width, height = (args.size * 2)[:2]
    spec = OrthoSpec(width_px=width, height_px=height, pixel_size_m=args.pixel_size, crs=args.crs, seed=args.seed)
    start = time.perf_counter()
    out = make_synthetic_ortho(args.output, spec, name=args.name, labels_crs=args.labels_crs)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB
    print(f"{out['raster']}: {width} x {height} px, {args.crs}, {args.pixel_size} m/px, "
          f"{os.path.getsize(out['raster']) / 2**20:.1f} MiB; {time.perf_counter() - start:.1f} s, "
          f"peak memory {peak_mib:.0f} MiB\n"
          f"{out['labels']}: {out['num_objects']} objects in map coordinates\n"
          f"{out['truth']}: the same objects as COCO json (pixels); object sizes\n{size_histogram(out['truth'])}")


def size_histogram(json_path, bins=(0, 8, 16, 32, 64, 128, 256, 512)):
    """Text histogram of object sqrt(area) in pixels, and the per-image max/min ratio."""
    records, _ = load_coco_records(json_path)
    sizes = [np.sqrt((r["boxes"][:, 2] - r["boxes"][:, 0]) * (r["boxes"][:, 3] - r["boxes"][:, 1]))
             for r in records]
    counts, edges = np.histogram(np.concatenate(sizes), bins=bins)
    lines = [f"  [{lo:>4.0f}, {hi:>4.0f}) px: {n:>5d}" for lo, hi, n in zip(edges[:-1], edges[1:], counts)]
    spans = [s.max() / s.min() for s in sizes if len(s) >= 2]
    empty = sum(len(s) == 0 for s in sizes)
    if spans:
        lines.append(f"  per-image span max/min sqrt(area): median {np.median(spans):.1f}x, "
                     f"min {np.min(spans):.1f}x over {len(spans)} images with objects; {empty} images without objects")
    else:
        lines.append(f"  no image holds two or more objects; {empty} images without objects")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s]: %(message)s", datefmt="%m/%d %H:%M:%S")
    if args.ortho:
        return make_ortho(args)
    if args.dense:
        sides = dict(min_side_px=args.min_side or 2200, max_side_px=args.max_side or 2500)
        objects = dict(objects_per_image=tuple(args.objects)) if args.objects else {}
        specs = {"train": DenseSpec(num_images=args.train, seed=args.seed * 2, **sides, **objects),
                 "val": DenseSpec(num_images=args.val, seed=args.seed * 2 + 1, **sides, **objects)}
        for split, spec in specs.items():
            if spec.num_images > 0:
                path = make_synthetic_dataset(args.output, split, spec)
                print(f"{path}: object sizes\n{size_histogram(path)}")
        return
    sides = dict(min_side_px=args.min_side or 1000, max_side_px=args.max_side or 2000)
    objects = dict(objects_per_image=tuple(args.objects)) if args.objects else {}
    specs = {"train": SyntheticSpec(num_images=args.train, seed=args.seed * 2, **sides, **objects),
             "val": SyntheticSpec(num_images=args.val, seed=args.seed * 2 + 1, **sides, **objects),
             "clutter": SyntheticSpec(num_images=args.clutter, seed=CLUTTER_SEED_OFFSET + args.seed,
                                      objects_per_image=(4, 8), distractors_per_image=(20, 40),
                                      empty_fraction=0.0, **sides),
             "sparse": SyntheticSpec(num_images=args.sparse, seed=SPARSE_SEED_OFFSET + args.seed,
                                     objects_per_image=(2, 4), distractors_per_image=(2, 4),
                                     empty_fraction=0.0, **sides)}
    for split, spec in specs.items():
        if spec.num_images <= 0:
            continue
        path = make_synthetic_dataset(args.output, split, spec)
        print(f"{path}: object sizes\n{size_histogram(path)}")


if __name__ == "__main__":
    run_main(main, "make_synthetic_dataset.py")
