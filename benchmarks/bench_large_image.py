#!/usr/bin/env python
"""Peak memory of planning, chip loading and tiled inference on one 10,000 x 10,000 image.

Prints the peak resident memory after each stage next to the size of one decoded copy of the
image, so the number of decoded copies held at once can be read off. A stand-in model (returns
no boxes) isolates the data path from the network.

Example:
    python benchmarks/bench_large_image.py --side 10000
"""

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--side", type=int, default=10000, help="image side in pixels (default: %(default)s)")
    args = p.parse_args()

    import torch
    from detectron2.structures import Boxes, Instances

    from sniper_d2.chips import positive_chips
    from sniper_d2.data.mapper import SniperDatasetMapper
    from sniper_d2.image_io import read_image
    from sniper_d2.inference import MultiScaleTiledPredictor, TiledInferenceParams

    side = args.side
    copy_mb = side * side * 3 / 2**20
    folder = tempfile.mkdtemp()
    path = os.path.join(folder, "big.jpg")
    # Written by a child process, so this process's peak memory starts low.
    subprocess.run([sys.executable, "-c", (
        "import cv2, numpy as np, sys; s = int(sys.argv[2]); "
        "small = np.random.default_rng(0).integers(0, 255, (s // 8, s // 8, 3), dtype=np.uint8); "
        "cv2.imwrite(sys.argv[1], cv2.resize(small, (s, s), interpolation=cv2.INTER_NEAREST))"),
        path, str(side)], check=True)
    rng = np.random.default_rng(0)
    start = peak_mb()
    print(f"image {side}x{side}: one decoded copy = {copy_mb:.0f} MB; peak RSS after imports {start:.0f} MB")

    def above_start():
        return f"peak RSS {peak_mb():.0f} MB, +{peak_mb() - start:.0f} MB = {(peak_mb() - start) / copy_mb:.1f} decoded copies"

    xy = rng.uniform(0, side - 400, (2000, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(8, 300, (2000, 2))], axis=1).astype(np.float32)
    t = time.perf_counter()
    chips = positive_chips(boxes, (side, side), 2.0, (0, 80), 512, 32, seed=0)
    print(f"planning (2,000 boxes, scale 2): {len(chips)} chips in {time.perf_counter() - t:.2f} s; "
          f"{above_start()}")

    mapper = SniperDatasetMapper(chip_size=512, image_format="BGR", horizontal_flip=False)
    annos = [{"bbox": b.tolist(), "bbox_mode": 0, "category_id": 0, "iscrowd": 0} for b in boxes[:200]]
    t = time.perf_counter()
    for chip in chips[:3]:
        mapper({"file_name": path, "image_id": 1, "height": side, "width": side, "annotations": annos,
                "chip": chip.tolist(), "scale": 2.0, "valid_range": [0, 80], "is_negative": False})
    print(f"chip loading (3 chips): {(time.perf_counter() - t) / 3:.2f} s per chip; {above_start()}")

    def stand_in(inputs):
        out = []
        for item in inputs:
            inst = Instances((item["height"], item["width"]))
            inst.pred_boxes = Boxes(torch.zeros((0, 4)))
            inst.scores = torch.zeros(0)
            inst.pred_classes = torch.zeros(0, dtype=torch.int64)
            out.append({"instances": inst})
        return out

    params = TiledInferenceParams(scales=(1.0, 0.25, -1.0), valid_ranges=((0, 100), (64, 400), (300, -1)),
                                  tile_size=1024, tile_overlap=128, tile_batch_size=4)
    t = time.perf_counter()
    image = read_image(path)
    MultiScaleTiledPredictor(stand_in, params)(image)
    print(f"tiled inference (scales 1, 0.25, fit; 1024 tiles): {time.perf_counter() - t:.1f} s; {above_start()}")


if __name__ == "__main__":
    main()
