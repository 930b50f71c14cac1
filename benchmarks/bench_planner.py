#!/usr/bin/env python
"""The chip planner against a straightforward greedy cover, on the same boxes, in one run.

The reference (:func:`reference_positive_chips`, kept here) is the textbook greedy: list every
candidate chip of the grid, and at every pick test every candidate against every still-uncovered
box (a (candidates x boxes) containment test, vectorized with numpy per pick, computed in blocks to
bound memory), take the candidate holding the most, repeat. It uses the same grid, border handling
and tie rule (first candidate in row-major order) as ``sniper_d2.chips.positive_chips(seed=None)``,
so both return the same chips; the benchmark checks that, then times both.

Images are 4k (3840 x 2160) with 100 or 2,000 boxes of log-uniform size 8-300 px; each image is
planned at SNIPER's three default scales (3.0, 1.667, fit), chip 512, stride 32.

Example:
    python benchmarks/bench_planner.py                 # 100 and 2,000 boxes per image
    python benchmarks/bench_planner.py --images 2 --boxes 100 2000 --ref-images 1
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from sniper_d2.chips import chip_extent, positive_chips, resolve_scale  # noqa: E402
from sniper_d2.config import FIT_SCALE  # noqa: E402

SCALES = (3.0, 1.667, FIT_SCALE)
VALID_RANGES = ((0.0, 80.0), (32.0, 150.0), (120.0, -1.0))
CHIP_SIZE, STRIDE = 512, 32
IMAGE_SIZE = (2160, 3840)


def _axis_positions(length, chip_len, step):
    """Candidate chip starts/ends along one axis: grid from 0, plus the inward-shifted border one."""
    room = length - chip_len
    if room <= 0:
        starts = np.zeros(1, np.float32)
    else:
        grid = np.arange(int(np.ceil(room / step)) + 1) * step
        starts = np.unique(np.concatenate([[0.0], grid[grid < room], [room]]).astype(np.float32))
    ends = np.minimum((starts.astype(np.float64) + chip_len).astype(np.float32), np.float32(length))
    return starts, ends


def reference_positive_chips(boxes, image_size, scale, valid_range, chip_size, stride, block=4096):
    """Straightforward greedy cover: every pick tests all candidates against all uncovered boxes.

    Same contract as ``positive_chips(..., seed=None)`` for clean boxes (inside the image, positive
    size). Returns (K, 4) float32 XYXY chips in original pixels.
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    h, w = image_size
    lo, hi = valid_range
    hi = np.inf if hi < 0 else hi
    ch, cw = chip_extent(image_size, scale, chip_size)
    bw = (boxes[:, 2] - boxes[:, 0]).astype(np.float64)
    bh = (boxes[:, 3] - boxes[:, 1]).astype(np.float64)
    size = np.sqrt(bw * bh)
    boxes = boxes[(size >= lo) & (size < hi) & (bw <= cw) & (bh <= ch)]
    x0, x1 = _axis_positions(w, cw, stride / scale)
    y0, y1 = _axis_positions(h, ch, stride / scale)
    gy, gx = np.meshgrid(np.arange(len(y0)), np.arange(len(x0)), indexing="ij")
    candidates = np.stack([x0[gx.ravel()], y0[gy.ravel()], x1[gx.ravel()], y1[gy.ravel()]], 1)

    def inside(cands, bxs):
        return ((bxs[None, :, 0] >= cands[:, None, 0]) & (bxs[None, :, 1] >= cands[:, None, 1])
                & (bxs[None, :, 2] <= cands[:, None, 2]) & (bxs[None, :, 3] <= cands[:, None, 3]))

    uncovered = boxes
    chips = []
    while len(uncovered):
        counts = np.concatenate([inside(candidates[i:i + block], uncovered).sum(1)
                                 for i in range(0, len(candidates), block)])
        best = int(counts.argmax())
        if counts[best] == 0:
            break  # the rest have no grid position: one chip each, placed inside their interval
        chips.append(candidates[best])
        uncovered = uncovered[~inside(candidates[best:best + 1], uncovered)[0]]
    for b in uncovered:
        if chips and inside(np.stack(chips), b[None])[:, 0].any():
            continue
        b64 = b.astype(np.float64)
        cx0 = 0.5 * (max(b64[2] - cw, 0.0) + max(min(b64[0], w - cw), max(b64[2] - cw, 0.0)))
        cy0 = 0.5 * (max(b64[3] - ch, 0.0) + max(min(b64[1], h - ch), max(b64[3] - ch, 0.0)))
        chips.append(np.array([min(np.float32(cx0), b[0]), min(np.float32(cy0), b[1]),
                               max(min(np.float32(cx0 + cw), np.float32(w)), b[2]),
                               max(min(np.float32(cy0 + ch), np.float32(h)), b[3])], np.float32))
    return np.stack(chips).astype(np.float32) if chips else np.zeros((0, 4), np.float32)


def random_boxes(rng, n, image_size, min_px=8.0, max_px=300.0):
    """(n, 4) float32 XYXY boxes, sqrt area log-uniform in [min_px, max_px], aspect 1:2 to 2:1."""
    h, w = image_size
    size = np.exp(rng.uniform(np.log(min_px), np.log(max_px), n))
    aspect = np.exp(rng.uniform(np.log(0.5), np.log(2.0), n))
    bw, bh = size * np.sqrt(aspect), size / np.sqrt(aspect)
    x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
    return np.stack([x, y, x + bw, y + bh], 1).astype(np.float32)


def plan_all_scales(fn, boxes, seed_kw):
    chips = []
    for entry, valid_range in zip(SCALES, VALID_RANGES):
        scale = resolve_scale(entry, IMAGE_SIZE, CHIP_SIZE)
        chips.append(fn(boxes, IMAGE_SIZE, scale, valid_range, CHIP_SIZE, STRIDE, **seed_kw))
    return chips


def timed(fn, *args, repeat=1):
    """(result, median seconds over ``repeat`` calls)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn(*args)
        times.append(time.perf_counter() - start)
    return out, float(np.median(times))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--boxes", type=int, nargs="+", default=[100, 2000], help="boxes per image (default: %(default)s)")
    p.add_argument("--images", type=int, default=5, help="images timed with our planner (default: %(default)s)")
    p.add_argument("--ref-images", type=int, default=1,
                   help="of those, images also timed with the reference (slow) (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    print(f"4k image {IMAGE_SIZE[1]}x{IMAGE_SIZE[0]}, scales {SCALES}, chip {CHIP_SIZE}, stride {STRIDE}")
    print(f"{'boxes':>6} {'chips':>6} {'ours ms/img':>12} {'ours seeded':>12} {'reference ms/img':>17} {'speed-up':>9}")
    for n in args.boxes:
        rng = np.random.default_rng([args.seed, n])
        images = [random_boxes(rng, n, IMAGE_SIZE) for _ in range(max(args.images, args.ref_images))]
        plan_all_scales(positive_chips, images[0], {})  # warm-up (imports, caches)
        ours, ours_seeded, ref, num_chips = [], [], [], []
        for i, boxes in enumerate(images):
            chips, dt = timed(plan_all_scales, positive_chips, boxes, {}, repeat=3)
            ours.append(dt)
            num_chips.append(sum(len(c) for c in chips))
            ours_seeded.append(timed(plan_all_scales, positive_chips, boxes, {"seed": i}, repeat=3)[1])
            if i < args.ref_images:
                ref_chips, dt = timed(plan_all_scales, reference_positive_chips, boxes, {})
                ref.append(dt)
                for a, b in zip(chips, ref_chips):
                    if a.shape != b.shape or not np.array_equal(a, b):
                        raise AssertionError(f"{n} boxes, image {i}: planner and reference disagree "
                                             f"({len(a)} vs {len(b)} chips)")
        ours_ms = 1e3 * np.mean(ours[: args.ref_images])
        ref_ms = 1e3 * np.mean(ref)
        print(f"{n:>6} {np.mean(num_chips):>6.0f} {1e3 * np.mean(ours):>12.1f} {1e3 * np.mean(ours_seeded):>12.1f} "
              f"{ref_ms:>17.1f} {ref_ms / ours_ms:>8.0f}x")
    print("speed-up: reference time / our time on the same images (identical chips checked); "
          "'ours seeded' = with a per-epoch seed (random grid offset and tie-breaks)")


if __name__ == "__main__":
    main()
