#!/usr/bin/env python
"""Loader speed: SniperDatasetMapper chips/s vs detectron2's stock DatasetMapper images/s, same pixels.

Both read the same 2000x1500 JPEGs (written to a temporary folder first). Ours cuts 512x512 chips
(262k pixels) at fractional positions and SNIPER-like scales: 1.0, 0.5 and the whole image fit to
512 (0.256); the stock mapper resizes whole images to a short side of 443 px (443x591 = 262k pixels,
the same count). One process, flips on, boxes included. Prints samples/s per scale, the mix, and
the ratio ours / stock measured in the same run (target: ours >= stock / 1.3).

Example:
    python benchmarks/bench_loader.py --samples 60
"""

import argparse
import copy
import os
import sys
import tempfile
import time

import cv2
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from sniper_d2.data.mapper import SniperDatasetMapper  # noqa: E402
from sniper_d2.synthetic import SyntheticSpec, render_image  # noqa: E402
from results_store import add_results_argument, save_benchmark_results  # noqa: E402

IMAGE_W, IMAGE_H, CHIP = 2000, 1500, 512
SCALES = {"1.0": 1.0, "0.5": 0.5, "fit (0.256)": CHIP / IMAGE_W}


def write_images(folder, n):
    """n synthetic 2000x1500 JPEGs with their boxes, as detectron2 dataset dicts."""
    spec = SyntheticSpec(num_images=n, min_side_px=IMAGE_H, max_side_px=IMAGE_H, seed=3)
    dicts = []
    for i in range(n):
        image, boxes, cats, _ = render_image(spec, i)
        sx = IMAGE_W / image.shape[1]
        image = cv2.resize(image, (IMAGE_W, IMAGE_H))
        boxes = boxes * [sx, 1, sx, 1]
        path = os.path.join(folder, f"{i}.jpg")
        cv2.imwrite(path, image, [cv2.IMWRITE_JPEG_QUALITY, 92])
        dicts.append({"file_name": path, "image_id": i, "height": IMAGE_H, "width": IMAGE_W,
                      "annotations": [{"bbox": b.tolist(), "bbox_mode": 0, "category_id": int(c) - 1, "iscrowd": 0}
                                      for b, c in zip(boxes, cats)]})
    return dicts


def chip_dicts(dicts, scale, n, rng):
    """n chip dicts at ``scale``, at random fractional positions inside the images."""
    side = CHIP / scale
    out = []
    for k in range(n):
        d = dict(dicts[k % len(dicts)])
        x0 = rng.uniform(0, max(0.0, IMAGE_W - side))
        y0 = rng.uniform(0, max(0.0, IMAGE_H - side))
        d.update(chip=[x0, y0, x0 + side, y0 + side], scale=scale, valid_range=[0, float("inf")], is_negative=False)
        out.append(d)
    return out


def rate(fn, items):
    """Samples per second of ``fn`` over ``items`` (after one warm-up call)."""
    fn(copy.deepcopy(items[0]))
    items = [copy.deepcopy(i) for i in items]
    t = time.perf_counter()
    for item in items:
        fn(item)
    return len(items) / (time.perf_counter() - t)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=60, help="samples timed per loader (default: %(default)s)")
    p.add_argument("--images", type=int, default=4, help="distinct JPEGs (default: %(default)s)")
    add_results_argument(p, "bench_loader")
    args = p.parse_args()

    from detectron2.data import DatasetMapper
    from detectron2.data import transforms as T

    with tempfile.TemporaryDirectory() as folder:
        dicts = write_images(folder, args.images)
        rng = np.random.default_rng(0)
        ours = SniperDatasetMapper(chip_size=CHIP, image_format="BGR", horizontal_flip=True)
        stock = DatasetMapper(is_train=True, augmentations=[T.ResizeShortestEdge(443, 1333), T.RandomFlip()],
                              image_format="BGR")
        n_per_scale = max(1, args.samples // len(SCALES))
        per_scale = {name: chip_dicts(dicts, s, n_per_scale, rng) for name, s in SCALES.items()}
        mix = [c for group in zip(*per_scale.values()) for c in group]

        stock_rate = rate(stock, [dicts[k % len(dicts)] for k in range(args.samples)])
        scale_rates = {name: rate(ours, chips) for name, chips in per_scale.items()}
        mix_rate = rate(ours, mix)

    print(f"~262k pixels per sample from {IMAGE_W}x{IMAGE_H} JPEGs, one process, flips on")
    rows = [("detectron2 DatasetMapper, resize short side 443", stock_rate, "images/s")]
    rows += [(f"SniperDatasetMapper, 512x512 chips, scale {name}", r, "chips/s") for name, r in scale_rates.items()]
    rows += [("SniperDatasetMapper, the three scales mixed", mix_rate, "chips/s")]
    for label, r, unit in rows:
        print(f"  {label:<55s} {r:6.1f} {unit}")
    print(f"  ratio ours (mixed) / stock: {mix_rate / stock_rate:.2f}x  (target: >= {1 / 1.3:.2f}x)")
    save_benchmark_results("bench_loader", {
        "samples": args.samples, "stock_images_per_s": stock_rate,
        "chips_per_s": {name: r for name, r in scale_rates.items()}, "mixed_chips_per_s": mix_rate,
        "ratio_mixed_vs_stock": mix_rate / stock_rate}, args.results)


if __name__ == "__main__":
    main()
