#!/usr/bin/env python
"""Tiled inference throughput: tiles batched through the model vs one tile at a time, side by side.

Uses the tiny CPU config's detector (ResNet-18-FPN, random weights: speed does not depend on them)
on synthetic images, with the same tiles and scales both ways; prints images/s and the ratio.
Batching pays on CPUs too (larger convolutions use the cores better); on a GPU it is where the
speed comes from.

Example:
    python benchmarks/bench_infer.py --images 2 --batch 8 --rounds 2
"""

import argparse
import os
import sys
import time
from dataclasses import replace

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import sniper_d2.modeling  # noqa: E402,F401
from sniper_d2.cli import setup_cfg  # noqa: E402
from sniper_d2.inference import MultiScaleTiledPredictor, TiledInferenceParams  # noqa: E402
from sniper_d2.synthetic import SyntheticSpec, render_image  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", default=os.path.join(ROOT, "configs/sniper_tiny_cpu.yaml"))
    p.add_argument("--images", type=int, default=3, help="images timed per variant (default: %(default)s)")
    p.add_argument("--batch", type=int, default=8, help="tiles per forward pass, batched variant (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=2, help="alternating timing rounds (default: %(default)s)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()

    from detectron2.modeling import build_model

    cfg = setup_cfg(args.config_file, ["MODEL.DEVICE", args.device], purpose="read")
    model = build_model(cfg).eval()
    params = TiledInferenceParams.from_cfg(cfg)
    spec = SyntheticSpec(num_images=args.images, min_side_px=900, max_side_px=1100, seed=5)
    images = [render_image(spec, i)[0] for i in range(args.images)]

    predictors = {b: MultiScaleTiledPredictor(model, replace(params, tile_batch_size=b)) for b in (1, args.batch)}
    n_tiles = sum(1 for image in images for _ in predictors[1].tiles(image))

    def run(batch_size):
        if args.device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for image in images:
            predictors[batch_size](image)
        if args.device == "cuda":
            torch.cuda.synchronize()
        return len(images) / (time.perf_counter() - t)

    for b in predictors:  # warm-up
        predictors[b](images[0][:600, :600])
    # Alternate the two variants and keep each one's best round, so a busy machine biases neither.
    one, batched = 0.0, 0.0
    for _ in range(args.rounds):
        one = max(one, run(1))
        batched = max(batched, run(args.batch))
    print(f"{args.device}: {len(images)} images of ~1000 px, scales {params.scales}, tiles {params.tile_size} px, "
          f"{n_tiles} tiles; best of {args.rounds} alternating rounds")
    print(f"  one tile per forward: {one:.3f} images/s")
    print(f"  {args.batch} tiles per forward: {batched:.3f} images/s   -> {batched / one:.2f}x")


if __name__ == "__main__":
    main()
