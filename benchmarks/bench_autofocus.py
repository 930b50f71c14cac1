#!/usr/bin/env python
"""AutoFocus vs full multi-scale tiled inference: AP, pixels processed, wall time, side by side.

One model (configs/sniper_tiny_cpu_autofocus.yaml: the demo's ResNet-18-FPN with the focus head,
trained from scratch on the demo's synthetic training split; trained here unless
``<output>/model/model_final.pth`` exists, or ``--model``'s; config overrides on the command line
apply to its training and inference alike) is run both ways on the same images, image by image,
alternating the two modes (so drifting machine load hits both alike):

- the demo's validation split (seed 0) and other seeds' (1, 2 by default): the default data, 8-20
  objects of 6-400 px per image, spread everywhere;
- a "sparse" split per seed (2-4 objects, one tiny and one large among them): where AutoFocus pays.

Per split: COCO AP of each mode, pixels through the detector per scale (tile areas), seconds per
image. The last line is over the default validation splits of all seeds (AP: mean over the
seeds, spread in the line above; pixels and time: summed):
    autofocus: AP <a> vs <b> full; <p>x fewer pixels; <t>x faster

Run it alone under the machine's heavy lock: ``flock /tmp/sniper_heavy.lock python benchmarks/bench_autofocus.py``
(2 threads; ``BENCH_THREADS=1`` for 1). AP and pixels do not depend on machine load; wall times do.
"""

import argparse
import contextlib
import io
import json
import os
import sys
import time
from dataclasses import replace

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
CONFIG = "configs/sniper_tiny_cpu_autofocus.yaml"

from lab import experiment  # noqa: E402
from sniper_d2.cli import parse_with_overrides  # noqa: E402
from results_store import add_results_argument, save_benchmark_results  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default="output/bench_autofocus", help="data, model and results (default: %(default)s)")
    p.add_argument("--model", default=None,
                   help="folder of the model (trained there unless it holds model_final.pth; default: <output>/model)")
    p.add_argument("--splits", nargs="+", default=["val", "sparse"], choices=["val", "sparse"],
                   help="splits to run per seed (default: %(default)s)")
    p.add_argument("--iters", type=int, default=400, help="training iterations if no model exists (default: %(default)s)")
    p.add_argument("--val-images", type=int, default=20,
                   help="images per split (default: %(default)s; with 6, AutoFocus - full swung by 2-4 AP "
                        "from one split to the next)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                   help="data seeds of the evaluation splits; the model trains on seed 0's (default: %(default)s)")
    p.add_argument("--also-thresholds", type=float, nargs="*", default=[], metavar="T",
                   help="run a second AutoFocus setting side by side with these SNIPER.AUTOFOCUS.THRESHOLDS "
                        "(one per test scale); the last line stays the config's setting")
    p.add_argument("--also-min-chip-sizes", type=int, nargs="*", default=[], metavar="PX",
                   help="the second setting's SNIPER.AUTOFOCUS.MIN_CHIP_SIZES (default: the config's)")
    add_results_argument(p, "bench_autofocus")
    p.add_argument("opts", nargs=argparse.REMAINDER, default=[],
                   help="config overrides, for training (when it trains) and inference, e.g. "
                        "SNIPER.AUTOFOCUS.THRESHOLDS '(0.5, 0.2, 0.1)' or SNIPER.AUTOFOCUS.POSITIVE_MIN_SIDE 24")
    return parse_with_overrides(p, argv)


def make_data(args, seed, train):
    folder = os.path.join(args.output, f"data_seed{seed}")

    def ready(split):  # present, and an evaluation split of --val-images images
        path = os.path.join(folder, f"{split}.json")
        if not os.path.isfile(path) or split == "train":
            return os.path.isfile(path)
        with open(path) as f:
            return len(json.load(f)["images"]) == args.val_images

    if not all(ready(s) for s in ["val", "sparse"] + (["train"] if train else [])):
        experiment.run([sys.executable, "tools/make_synthetic_dataset.py", "--output", folder, "--train",
                        str(16 if train else 0), "--val", str(args.val_images), "--sparse", str(args.val_images),
                        "--min-side", "700", "--max-side", "1200", "--seed", str(seed)])
    return folder


def train(args, data):
    """``<model>/model_final.pth``, trained first (CONFIG plus the command line's overrides, seed 0's
    training split, ``--iters``, lab/experiment.py's schedule) unless it exists."""
    out = args.model or os.path.join(args.output, "model")
    weights = os.path.join(out, "model_final.pth")
    if os.path.isfile(weights):
        print(f"reusing {weights}")
        return weights
    experiment.train(CONFIG, out, args.iters, "SNIPER.REGISTER_COCO",
                     f'(("synthetic_train", "{data}/train.json", ""), ("synthetic_val", "{data}/val.json", ""))',
                     "DATASETS.TEST", '("synthetic_val",)', *args.opts)
    return weights


def coco_ap(json_path, detections, max_dets=500):
    """COCO box AP (0-100) of ``detections`` (COCO results list) against ``json_path``, up to
    ``max_dets`` per image (as SniperCOCOEvaluator, through detectron2's COCOevalMaxDets)."""
    from detectron2.evaluation.coco_evaluation import COCOevalMaxDets
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(json_path)
        if not detections:
            return 0.0
        ev = COCOevalMaxDets(gt, gt.loadRes(detections), "bbox")
        ev.params.maxDets = [1, 10, max_dets]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return 100.0 * float(ev.stats[0])


def bench_split(json_path, predictors, image_format):
    """Run every predictor on every image (alternating); AP, pixels (per scale) and seconds per mode."""
    from sniper_d2.coco import boxes_xyxy_to_xywh
    from sniper_d2.image_io import read_image

    gt = json.load(open(json_path))
    cat_ids = sorted(c["id"] for c in gt["categories"])
    folder = os.path.dirname(json_path)
    stats = {m: {"dets": [], "pixels": 0, "seconds": 0.0, "per_scale": 0} for m in predictors}
    for entry in gt["images"]:
        path = entry["file_name"] if os.path.isabs(entry["file_name"]) else os.path.join(folder, "images", entry["file_name"])
        if not os.path.isfile(path):
            path = os.path.join(folder, entry["file_name"])
        image = read_image(path, format=image_format)
        for mode, predictor in predictors.items():
            start = time.perf_counter()
            det = predictor(image)
            s = stats[mode]
            s["seconds"] += time.perf_counter() - start
            s["pixels"] += int(det["pixels"].sum())
            s["per_scale"] = s["per_scale"] + det["pixels"]
            for box, score, cls in zip(boxes_xyxy_to_xywh(det["boxes"].numpy()), det["scores"].tolist(),
                                       det["classes"].tolist()):
                s["dets"].append({"image_id": entry["id"], "category_id": cat_ids[cls], "bbox": [float(v) for v in box],
                                  "score": float(score)})
    for s in stats.values():
        s["ap"] = coco_ap(json_path, s["dets"])
    return stats, len(gt["images"])


def build_predictors(config_file, weights, opts=()):
    """The config's model with ``weights`` (eval mode) and two predictors over it.

    Args:
        config_file (str): relative to the repository root or absolute. opts: config overrides.

    Returns:
        cfg, model, {"full": ..., "autofocus": ...} (MultiScaleTiledPredictor in each test mode; their
        ``params`` are the config's TiledInferenceParams with that mode).
    """
    from detectron2.config import get_cfg

    from sniper_d2.config import add_sniper_config
    from sniper_d2.inference import MultiScaleTiledPredictor, TiledInferenceParams
    from sniper_d2.inference.fast_model import build_inference_model

    cfg = get_cfg()
    add_sniper_config(cfg)
    cfg.merge_from_file(os.path.join(ROOT, config_file))
    cfg.merge_from_list(list(opts))
    model = build_inference_model(cfg, weights)  # as tools/infer.py runs it
    params = TiledInferenceParams.from_cfg(cfg)
    return cfg, model, {m: MultiScaleTiledPredictor(model, replace(params, mode=m)) for m in ("full", "autofocus")}


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    data = {seed: make_data(args, seed, train=seed == 0) for seed in sorted(set(args.seeds) | {0})}
    weights = train(args, data[0])
    data0 = data[0]

    from sniper_d2.inference import MultiScaleTiledPredictor

    cfg, model, predictors = build_predictors(CONFIG, weights, args.opts)
    params = predictors["autofocus"].params
    if args.also_thresholds or args.also_min_chip_sizes:
        thresholds = tuple(args.also_thresholds) or params.focus_thresholds
        min_chips = tuple(args.also_min_chip_sizes) or params.focus_min_chip_sizes
        name = "autofocus " + "/".join(f"{t:g}" for t in thresholds) + " " + "/".join(map(str, min_chips))
        predictors[name] = MultiScaleTiledPredictor(model, replace(
            params, mode="autofocus", focus_thresholds=thresholds, focus_min_chip_sizes=min_chips))
    variants = [m for m in predictors if m != "full"]
    print(f"scales {params.scales}; AutoFocus thresholds {params.focus_thresholds}, dilations "
          f"{params.focus_dilations}, min chip sizes {params.focus_min_chip_sizes}; {torch.get_num_threads()} threads")
    # Warm-up (allocator, first-call costs), untimed.
    from sniper_d2.image_io import read_image

    first = json.load(open(os.path.join(data0, "val.json")))["images"][0]["file_name"]
    warm = read_image(first if os.path.isabs(first) else os.path.join(data0, "images", first), format=cfg.INPUT.FORMAT)
    for predictor in predictors.values():
        predictor(warm)

    header = (f"{'split / setting':<34s} {'AP full':>8s} {'AP auto':>8s} {'Mpx full':>9s} {'Mpx auto':>9s} {'px ratio':>9s} "
              f"{'s/img full':>10s} {'s/img auto':>10s} {'speed-up':>9s}   Mpx per scale auto (full)")
    print(header)
    results = {}
    for split in args.splits:
        for seed in args.seeds:
            stats, n = bench_split(os.path.join(data[seed], f"{split}.json"), predictors, cfg.INPUT.FORMAT)
            results[(seed, split)] = stats
            f = stats["full"]
            for variant in variants:
                a = stats[variant]
                per_scale = " ".join(f"{x / 1e6:.1f}({y / 1e6:.1f})" for x, y in zip(a["per_scale"], f["per_scale"]))
                print(f"{split + ' seed ' + str(seed) + ', ' + variant:<34s} {f['ap']:8.2f} {a['ap']:8.2f} {f['pixels'] / 1e6:9.1f} "
                      f"{a['pixels'] / 1e6:9.1f} {f['pixels'] / a['pixels']:8.2f}x {f['seconds'] / n:10.2f} "
                      f"{a['seconds'] / n:10.2f} {f['seconds'] / a['seconds']:8.2f}x   {per_scale}", flush=True)

    def summary(split, variant="autofocus"):
        runs = [results[(seed, split)] for seed in args.seeds]
        ap = {m: float(np.mean([r[m]["ap"] for r in runs])) for m in ("full", variant)}
        ap["autofocus"] = ap[variant]
        diff = np.array([r[variant]["ap"] - r["full"]["ap"] for r in runs])
        px = {m: sum(r[m]["pixels"] for r in runs) for m in ("full", variant)}
        sec = {m: sum(r[m]["seconds"] for r in runs) for m in ("full", variant)}
        return ap, diff, px["full"] / px[variant], sec["full"] / sec[variant]

    figures = {"seeds": args.seeds, "thresholds": list(params.focus_thresholds), "per_split": {}}
    seeds = ", ".join(map(str, args.seeds))
    for split, name in [(sp, f"{sp_name}, {v}") for v in variants[::-1]
                        for sp, sp_name in (("sparse", "sparse small objects"), ("val", "default data"))
                        if sp in args.splits]:
        ap, diff, px, speed = summary(split, name.split(", ", 1)[1])
        print(f"{name} (seeds {seeds}): AP {ap['autofocus']:.2f} vs {ap['full']:.2f} full (AutoFocus - full per "
              f"seed: {' '.join(f'{d:+.2f}' for d in diff)}; mean {diff.mean():+.2f}, std {diff.std():.2f}); "
              f"{px:.2f}x fewer pixels; {speed:.2f}x faster")
        figures["per_split"][name] = {"ap_full": ap["full"], "ap_autofocus": ap["autofocus"],
                                      "ap_diff_per_seed": diff.tolist(), "fewer_pixels": px, "speedup": speed}
    save_benchmark_results("bench_autofocus", figures, args.results)
    print(f"autofocus: AP {ap['autofocus']:.2f} vs {ap['full']:.2f} full; {px:.2f}x fewer pixels; {speed:.2f}x faster")


if __name__ == "__main__":
    main()
