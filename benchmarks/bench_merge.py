#!/usr/bin/env python
"""Merge speed: sniper_d2's merge_detections vs a straightforward pure-Python NMS, side by side.

The reference is what a direct port does (PaddleDetection's SNIPER merge is of this kind): sort by
score, then compare each kept box with every remaining box in Python loops. Both run on the same
boxes, per class, and must keep the same boxes; the script prints times and the ratio.

Example:
    python benchmarks/bench_merge.py --boxes 4000
"""

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from sniper_d2.inference import merge_detections  # noqa: E402
from results_store import add_results_argument, save_benchmark_results  # noqa: E402


def python_nms(boxes, scores, classes, iou_threshold):
    """Reference: greedy NMS in pure Python, as in PaddleDetection's SNIPER merge: sort by score, then
    compute the IoU of each kept box with every remaining box. Per class. Returns kept indices."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    suppressed = [False] * len(order)
    keep = []
    for a, i in enumerate(order):
        if suppressed[a]:
            continue
        keep.append(i)
        x0, y0, x1, y1 = boxes[i]
        area_i = (x1 - x0) * (y1 - y0)
        for b in range(a + 1, len(order)):
            if suppressed[b]:
                continue
            j = order[b]
            u0, v0, u1, v1 = boxes[j]
            inter = max(0.0, min(x1, u1) - max(x0, u0)) * max(0.0, min(y1, v1) - max(y0, v0))
            iou = inter / (area_i + (u1 - u0) * (v1 - v0) - inter)
            if iou > iou_threshold and classes[j] == classes[i]:
                suppressed[b] = True
    return keep


def random_detections(n, seed=0, image_side=4000, classes=10):
    """Clustered boxes (as tiles and scales produce: many near-duplicates), scores and classes."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, image_side, (n // 8 + 1, 2))
    c = centres[rng.integers(0, len(centres), n)] + rng.normal(0, 3, (n, 2))
    wh = rng.uniform(8, 120, (n, 2))
    boxes = np.concatenate([c - wh / 2, c + wh / 2], axis=1).astype(np.float32)
    return boxes, rng.random(n).astype(np.float32), rng.integers(0, classes, n)


def best_of(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--boxes", type=int, default=4000, help="detections per image (default: %(default)s)")
    p.add_argument("--repeat", type=int, default=5, help="timing repeats, best kept (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default: %(default)s; on a busy machine more threads mostly add "
                        "contention for these small tensors)")
    add_results_argument(p, "bench_merge")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    boxes, scores, classes = random_detections(args.boxes)
    tb, ts, tc = torch.as_tensor(boxes), torch.as_tensor(scores), torch.as_tensor(classes)
    big_k = len(boxes)
    t_ref, keep_ref = best_of(lambda: python_nms(boxes.tolist(), scores.tolist(), classes.tolist(), 0.5), 1)
    t_ours, (kb, ks, kc) = best_of(lambda: merge_detections(tb, ts, tc, "nms", 0.5, top_k=big_k), args.repeat)
    same = sorted(map(tuple, boxes[keep_ref].tolist())) == sorted(map(tuple, kb.numpy().tolist()))
    print(f"{args.boxes} boxes, 10 classes, NMS IoU 0.5 ({len(keep_ref)} kept, identical results: {same}); "
          f"torch CPU threads: {torch.get_num_threads()}")
    print(f"  pure-Python NMS (reference): {t_ref * 1000:10.1f} ms")
    print(f"  merge_detections('nms', CPU): {t_ours * 1000:9.2f} ms   -> {t_ref / t_ours:,.0f}x faster")
    t_soft, _ = best_of(lambda: merge_detections(tb, ts, tc, "soft_nms", top_k=500, sigma=0.55), 2)
    print(f"  merge_detections('soft_nms', top 500, CPU): {t_soft * 1000:.1f} ms -> {t_ref / t_soft:,.0f}x faster")
    t_nested, _ = best_of(lambda: merge_detections(tb, ts, tc, "nested_nms", 0.5, top_k=500, ios_threshold=0.8),
                          args.repeat)
    print(f"  merge_detections('nested_nms', top 500, CPU): {t_nested * 1000:.1f} ms -> "
          f"{t_ref / t_nested:,.0f}x faster (does more: also IOS > 0.8)")
    figures = {"boxes": args.boxes, "threads": torch.get_num_threads(), "identical_results": same,
               "python_nms_ms": t_ref * 1000, "nms_ms": t_ours * 1000, "nms_speedup": t_ref / t_ours,
               "soft_nms_top500_ms": t_soft * 1000, "soft_nms_speedup": t_ref / t_soft,
               "nested_nms_top500_ms": t_nested * 1000, "nested_nms_speedup": t_ref / t_nested}
    if torch.cuda.is_available():
        g = [x.cuda() for x in (tb, ts, tc)]
        merge_detections(*g, "nms", 0.5, top_k=big_k)
        torch.cuda.synchronize()

        def on_gpu():
            out = merge_detections(*g, "nms", 0.5, top_k=big_k)
            torch.cuda.synchronize()
            return out

        t_gpu, _ = best_of(on_gpu, args.repeat)
        print(f"  merge_detections('nms', CUDA): {t_gpu * 1000:8.2f} ms   -> {t_ref / t_gpu:,.0f}x faster")
        figures.update(nms_cuda_ms=t_gpu * 1000, nms_cuda_speedup=t_ref / t_gpu)
    save_benchmark_results("bench_merge", figures, args.results)
    if not same:
        sys.exit("the two NMS implementations disagree")


if __name__ == "__main__":
    main()
