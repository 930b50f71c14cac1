#!/usr/bin/env python
"""Loader speed: SniperDatasetMapper chips/s vs detectron2's stock DatasetMapper images/s, same pixels.

Both read the same 2000x1500 JPEGs. Ours cuts 512x512 chips (262k pixels) at scale 1 and 0.5; the
stock mapper resizes whole images to a short side of 443 px (443x591 = 262k pixels, the same count).
Single process, flips on, boxes included; prints samples/s and the ratio measured in one run.

Example:
    python benchmarks/bench_loader.py --samples 40
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


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=40, help="samples timed per loader (default: %(default)s)")
    p.add_argument("--images", type=int, default=4, help="distinct JPEGs (default: %(default)s)")
    args = p.parse_args()

    from detectron2.data import DatasetMapper
    from detectron2.data import transforms as T

    folder = tempfile.mkdtemp()
    spec = SyntheticSpec(num_images=args.images, min_side_px=1500, max_side_px=1500, seed=3)
    dicts = []
    for i in range(args.images):
        image, boxes, cats, _ = render_image(spec, i)
        image = cv2.resize(image, (2000, 1500))
        boxes = boxes * [2000 / spec.max_side_px, 1, 2000 / spec.max_side_px, 1]
        path = os.path.join(folder, f"{i}.jpg")
        cv2.imwrite(path, image, [cv2.IMWRITE_JPEG_QUALITY, 92])
        dicts.append({"file_name": path, "image_id": i, "height": 1500, "width": 2000,
                      "annotations": [{"bbox": b.tolist(), "bbox_mode": 0, "category_id": int(c) - 1, "iscrowd": 0}
                                      for b, c in zip(boxes, cats)]})

    ours = SniperDatasetMapper(chip_size=512, image_format="BGR", horizontal_flip=True)
    rng = np.random.default_rng(0)
    chips = []
    for k in range(args.samples):
        d = dict(dicts[k % len(dicts)])
        scale = (1.0, 0.5)[k % 2]
        side = 512 / scale
        x0, y0 = rng.uniform(0, 2000 - side), rng.uniform(0, 1500 - side)
        d.update(chip=[x0, y0, x0 + side, y0 + side], scale=scale, valid_range=[0, float("inf")], is_negative=False)
        chips.append(d)
    stock = DatasetMapper(is_train=True, augmentations=[T.ResizeShortestEdge(443, 1333), T.RandomFlip()],
                          image_format="BGR")

    def rate(fn, items):
        fn(items[0])  # warm-up
        t = time.perf_counter()
        for item in items:
            fn(item)
        return len(items) / (time.perf_counter() - t)

    stock_rate = rate(stock, [copy.deepcopy(dicts[k % len(dicts)]) for k in range(args.samples)])
    ours_rate = rate(ours, chips)
    print(f"{args.samples} samples of ~262k pixels from 2000x1500 JPEGs, one process")
    print(f"  detectron2 DatasetMapper (resize short side 443): {stock_rate:6.1f} images/s")
    print(f"  SniperDatasetMapper (512x512 chips, scales 1, 0.5): {ours_rate:6.1f} chips/s")
    print(f"  ratio ours / stock: {ours_rate / stock_rate:.2f}x")


if __name__ == "__main__":
    main()
