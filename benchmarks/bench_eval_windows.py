#!/usr/bin/env python
"""COCO evaluation of huge images: plain COCOeval vs evaluation windows, time and peak memory.

Synthetic scenes (no model): objects of 8-64 px spread over one square image, detections = 85% of
the objects found with a jitter of ~8% of their size and scores higher than the false positives',
plus 20% false positives; several classes. Every measurement runs in a fresh process (its peak
resident memory, ``ru_maxrss``, is its own), on the same data:

1. side by side, on an image plain COCOeval can still do (default 4096 px, 3,000 objects): seconds,
   peak MB and AP / AP50 of plain COCOeval and of the windowed one (sniper_d2.evaluation_windows);
2. the huge case (default 30,000 x 30,000 px, 100,000 objects): the windowed evaluation only, with
   what plain matching would have to hold (the largest per-class IoU matrix, GB) instead.

Example:
    python benchmarks/bench_eval_windows.py                       # both cases, ~2-3 min on 2 cores
    python benchmarks/bench_eval_windows.py --huge-objects 20000  # quicker
"""

import argparse
import multiprocessing as mp
import os
import resource
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from results_store import add_results_argument, save_benchmark_results  # noqa: E402

from sniper_d2.evaluation_windows import cut_fraction, evaluate_coco  # noqa: E402


def synthetic_scene(side_px, n_objects, classes, seed=0):
    """(COCO json, COCO results) of one ``side_px`` square image (image id 1), built vectorized."""
    rng = np.random.default_rng(seed)
    wh = rng.uniform(8, 64, (n_objects, 2))
    gt_boxes = np.concatenate([rng.uniform(0, 1, (n_objects, 2)) * (side_px - wh), wh], 1)
    gt_cls = rng.integers(1, classes + 1, n_objects)
    found = rng.uniform(size=n_objects) < 0.85
    det_boxes = gt_boxes[found] + rng.normal(0, 0.08, (int(found.sum()), 4)) * np.tile(wh[found], 2)
    n_fp = n_objects // 5
    fp_wh = rng.uniform(8, 64, (n_fp, 2))
    fp_boxes = np.concatenate([rng.uniform(0, 1, (n_fp, 2)) * (side_px - fp_wh), fp_wh], 1)
    det_boxes = np.concatenate([det_boxes, fp_boxes]).round(2)
    det_cls = np.concatenate([gt_cls[found], rng.integers(1, classes + 1, n_fp)])
    scores = np.concatenate([rng.uniform(0.3, 1.0, int(found.sum())), rng.uniform(0.0, 0.7, n_fp)]).round(4)
    gt = {"images": [{"id": 1, "file_name": "scene.tif", "height": side_px, "width": side_px}],
          "categories": [{"id": c, "name": f"class{c}"} for c in range(1, classes + 1)],
          "annotations": [{"id": k + 1, "image_id": 1, "category_id": c, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
                          for k, (b, c) in enumerate(zip(gt_boxes.round(2).tolist(), gt_cls.tolist()))]}
    results = [{"image_id": 1, "category_id": c, "bbox": b, "score": s}
               for b, c, s in zip(det_boxes.tolist(), det_cls.tolist(), scores.tolist())]
    return gt, results


def _measure(queue, side_px, n_objects, classes, window_px, max_dets):
    gt, results = synthetic_scene(side_px, n_objects, classes)
    before_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    coco_eval = evaluate_coco(gt, results, window_size_px=window_px, windowed_image_ids=[1] if window_px else [],
                              max_dets=(1, 10, max_dets))
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put({"seconds": round(seconds, 2), "peak_mb": round(peak_mb), "data_mb": round(before_mb),
               "AP": round(100 * coco_eval.stats[0], 3), "AP50": round(100 * coco_eval.stats[1], 3)})


def measure(side_px, n_objects, classes, window_px, max_dets):
    """Run one evaluation in a fresh process; its seconds, peak RSS (MB), RSS with the data only, AP."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_measure, args=(queue, side_px, n_objects, classes, window_px, max_dets))
    proc.start()
    out = queue.get()
    proc.join()
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--side", type=int, default=4096, help="side-by-side image side, px (default: %(default)s)")
    p.add_argument("--objects", type=int, default=3000, help="side-by-side objects (default: %(default)s)")
    p.add_argument("--huge-side", type=int, default=30000, help="huge image side, px (default: %(default)s)")
    p.add_argument("--huge-objects", type=int, default=100000, help="huge image objects (default: %(default)s)")
    p.add_argument("--classes", type=int, default=5, help="classes (default: %(default)s)")
    p.add_argument("--window", type=int, default=1024, help="evaluation window side, px (default: %(default)s)")
    add_results_argument(p, "bench_eval_windows")
    args = p.parse_args()

    figures = {"classes": args.classes, "window_px": args.window}
    gt, _ = synthetic_scene(args.side, args.objects, args.classes)
    cut = cut_fraction([a["bbox"] for a in gt["annotations"]], args.window)
    print(f"side by side: {args.side} x {args.side} px, {args.objects} objects, {args.classes} classes, "
          f"{args.window} px windows ({cut:.1%} of the objects cut by a border)")
    plain = measure(args.side, args.objects, args.classes, 0, 10 * args.objects)
    windowed = measure(args.side, args.objects, args.classes, args.window, 10 * args.objects)
    for name, m in (("plain COCOeval", plain), ("windowed", windowed)):
        print(f"  {name:15s} {m['seconds']:8.2f} s  peak {m['peak_mb']:6d} MB (data {m['data_mb']} MB)  "
              f"AP {m['AP']:.2f}  AP50 {m['AP50']:.2f}")
    speedup = plain["seconds"] / max(windowed["seconds"], 1e-9)
    print(f"  windowed / plain: {speedup:.1f}x faster, AP {windowed['AP'] - plain['AP']:+.2f}, "
          f"AP50 {windowed['AP50'] - plain['AP50']:+.2f}")
    figures["side_by_side"] = {"side_px": args.side, "objects": args.objects, "cut_fraction": round(cut, 4),
                               "plain": plain, "windowed": windowed, "speedup": round(speedup, 2)}

    n_class = args.huge_objects / args.classes
    iou_gb = (1.05 * n_class) * n_class * 8 / 1e9  # detections ~1.05 x objects per class, float64 IoU
    print(f"huge: {args.huge_side} x {args.huge_side} px, {args.huge_objects} objects "
          f"(plain COCO matching: one {iou_gb:.1f} GB IoU matrix per class, Python loops over its pairs)")
    huge = measure(args.huge_side, args.huge_objects, args.classes, args.window, 10_000)
    print(f"  windowed        {huge['seconds']:8.2f} s  peak {huge['peak_mb']:6d} MB (data {huge['data_mb']} MB)  "
          f"AP {huge['AP']:.2f}  AP50 {huge['AP50']:.2f}")
    figures["huge"] = {"side_px": args.huge_side, "objects": args.huge_objects,
                       "plain_iou_matrix_gb_per_class": round(iou_gb, 1), "windowed": huge}
    save_benchmark_results("bench_eval_windows", figures, args.results)


if __name__ == "__main__":
    main()
