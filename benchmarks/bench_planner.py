#!/usr/bin/env python
"""The chip planner, side by side with references, in one run.

Part 1, data sets (what ``tools/plan_chips.py`` and training run): images per second of
``sniper_d2.plans.build_plan`` in one process against the REFERENCE PLANNER kept below, the
planner as it was before issue 14 (commit f630c78: one ``positive_chips`` / ``negative_chips``
call, one random generator and one greedy per image x scale x epoch), on the same records:

  * COCO-like: 7 boxes per image (Poisson), 500-800 x 350-550 px, box sides log-uniform 8-400 px;
  * VisDrone-like: 54 boxes per image (Poisson), 1360-2000 x 765-1500 px, sides 4-150 px;
  * VisDrone-like with proposals (``--proposals``): plus clutter proposals for negative chips.

Settings of ``configs/sniper_r50_fpn.yaml``: scales 3, 1.667 and fit, valid ranges (0, 80),
[32, 150), [120, inf), chip 512, stride 32, 8 epochs. Rounds alternate between the two planners
(best round reported). Both plans are checked: every valid box that fits a chip lies inside a
chip of its (image, scale, epoch). The chips differ (the seeded tie-breaks changed), so the
benchmark also prints chips per image per epoch for both.

Part 2, one 4k image: ``positive_chips`` against the textbook greedy (:func:`reference_positive_chips`:
every pick tests every candidate chip against every uncovered box), same grid and tie rule
(``seed=None``), identical chips asserted, on 3840 x 2160 images with 100 and 2,000 boxes of
8-300 px at the same three scales.

Example:
    python benchmarks/bench_planner.py                       # both parts
    python benchmarks/bench_planner.py --part 1 --coco-images 400 --visdrone-images 150 --rounds 3
"""

import argparse
import logging
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from sniper_d2.chips import boxes_inside, chip_extent, off_object_proposals, positive_chips, resolve_scale  # noqa: E402
# Input checks and the fallback chip's placement are unchanged since the reference: call them, don't copy them.
from sniper_d2.chips import _check_args as ref_check_args  # noqa: E402
from sniper_d2.chips import _clean_boxes as ref_clean_boxes  # noqa: E402
from sniper_d2.chips import _fallback_chips as fallback_chips  # noqa: E402
from sniper_d2.config_types import FIT_SCALE  # noqa: E402
from sniper_d2.plans import (ChipPlan, PlanParams, build_plan, clean_record_inputs, dataset_hash,  # noqa: E402
                             plan_config_hash, proposals_digest)

logger = logging.getLogger("bench_planner")

SCALES = (3.0, 1.667, FIT_SCALE)
VALID_RANGES = ((0.0, 80.0), (32.0, 150.0), (120.0, -1.0))
CHIP_SIZE, STRIDE = 512, 32
EPOCHS = 8
PARAMS = PlanParams(scales=SCALES, valid_ranges=VALID_RANGES, chip_size=CHIP_SIZE, stride=STRIDE,
                    neg_min_proposals=(25, 10, 10))
IMAGE_SIZE = (2160, 3840)


# ================================================================================================
# REFERENCE PLANNER: the planner before issue 14 (commit f630c78), copied unchanged apart from the
# ``ref`` prefix on its names and unpacking the valid range (now a ValidRange). Kept only to time it
# against today's planner; do not edit.
# ================================================================================================
def ref_axis_positions(length, chip_len, step, offset):
    """Candidate chip (starts, ends) along one axis, float32, both sorted ascending.

    Starts are ``offset + k * step`` inside ``[0, length - chip_len]`` plus both border positions.
    Ends are ``start + chip_len`` computed once in float32 and capped at ``length``, so containment
    tests against float32 boxes are exact for the chips as returned.
    """
    room = length - chip_len
    if room <= 0:
        starts = np.zeros(1, np.float32)
    else:
        k = np.arange(int(math.ceil(room / step)) + 1, dtype=np.float64)
        grid = offset + k * step
        starts = np.unique(np.concatenate([[0.0], grid[grid < room], [room]]).astype(np.float32))
    ends = np.minimum((starts.astype(np.float64) + chip_len).astype(np.float32), np.float32(length))
    return starts, ends


def ref_grid_ranges(lo_coord, hi_coord, starts, ends):
    """Index range [first, last] of positions whose chip contains [lo_coord, hi_coord] (one axis)."""
    first = np.searchsorted(ends, hi_coord, side="left")  # first chip with end >= box end
    last = np.searchsorted(starts, lo_coord, side="right") - 1  # last chip with start <= box start
    return first.astype(np.int64), last.astype(np.int64)


class ref_Grid:
    """The candidate chips of one image at one scale (seeded offset)."""

    def __init__(self, image_size, scale, chip_size, stride, rng):
        h, w = float(image_size[0]), float(image_size[1])
        self.chip_h, self.chip_w = chip_extent(image_size, scale, chip_size)
        step = float(stride) / float(scale)
        off_x, off_y = (0.0, 0.0) if rng is None else rng.uniform(0.0, step, size=2)
        self.x0, self.x1 = ref_axis_positions(w, self.chip_w, step, off_x)
        self.y0, self.y1 = ref_axis_positions(h, self.chip_h, step, off_y)
        self.height, self.width = h, w
        self.rng = rng  # continues after the offsets: breaks ties in the greedy cover

    def fits(self, boxes):
        """(N,) bool: the box is not larger than a chip along either axis."""
        b = boxes.astype(np.float64)
        return ((b[:, 2] - b[:, 0]) <= self.chip_w) & ((b[:, 3] - b[:, 1]) <= self.chip_h)

    def ranges(self, boxes):
        """(xlo, xhi, ylo, yhi) int64 grid index ranges of each box (empty where lo > hi)."""
        xlo, xhi = ref_grid_ranges(boxes[:, 0], boxes[:, 2], self.x0, self.x1)
        ylo, yhi = ref_grid_ranges(boxes[:, 1], boxes[:, 3], self.y0, self.y1)
        return xlo, xhi, ylo, yhi

    def chips(self, iy, ix):
        iy, ix = np.asarray(iy, np.int64), np.asarray(ix, np.int64)
        return np.stack([self.x0[ix], self.y0[iy], self.x1[ix], self.y1[iy]], axis=1).astype(np.float32)


def ref_rectangle_counts(xlo, xhi, ylo, yhi, ny, nx, y_base=0, x_base=0):
    """(ny, nx) int32: how many of the index rectangles cover each cell (difference array)."""
    row = nx + 1
    corners = np.concatenate([
        (ylo - y_base) * row + (xlo - x_base),
        (ylo - y_base) * row + (xhi + 1 - x_base),
        (yhi + 1 - y_base) * row + (xlo - x_base),
        (yhi + 1 - y_base) * row + (xhi + 1 - x_base),
    ])
    n = len(xlo)
    weights = np.concatenate([np.ones(n), -np.ones(n), -np.ones(n), np.ones(n)])
    diff = np.bincount(corners, weights=weights, minlength=(ny + 1) * row).astype(np.int32)
    diff = diff.reshape(ny + 1, row)
    counts = np.cumsum(np.cumsum(diff, axis=0, dtype=np.int32), axis=1, dtype=np.int32)
    return np.ascontiguousarray(counts[:ny, :nx])


def ref_greedy_cover(xlo, xhi, ylo, yhi, ny, nx, rng, min_count):
    """Greedy set cover of index rectangles by grid cells.

    Each pick is the cell covered by the most not-yet-covered rectangles; ties go to the first cell
    in row-major order when ``rng`` is None, else to the cell with the highest random priority
    (a fraction in [0, 0.5) added to every cell's count, drawn once). Stops when the best cell
    covers fewer than ``min_count`` (>= 1) uncovered rectangles.

    Returns:
        (iy (K,) int64, ix (K,) int64, covered (N,) bool)
    """
    n = len(xlo)
    covered = np.zeros(n, bool)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), covered
    score = ref_rectangle_counts(xlo, xhi, ylo, yhi, ny, nx)
    if rng is not None:
        score = score + 0.5 * rng.random(score.shape)
    flat = score.reshape(-1)  # a view: updates of `score` show in `flat`
    remaining = np.arange(n)
    picks_y, picks_x = [], []
    min_count = max(int(min_count), 1)
    while len(remaining):
        best = int(flat.argmax())
        if int(flat[best]) < min_count:
            break
        iy, ix = divmod(best, nx)
        r = remaining
        hit = (xlo[r] <= ix) & (ix <= xhi[r]) & (ylo[r] <= iy) & (iy <= yhi[r])
        new = r[hit]
        remaining = r[~hit]
        covered[new] = True
        picks_y.append(iy)
        picks_x.append(ix)
        # Subtract the rectangles of the newly covered boxes, inside the window they span.
        if len(new) == 1:
            score[ylo[new[0]]:yhi[new[0]] + 1, xlo[new[0]]:xhi[new[0]] + 1] -= 1
            continue
        wy0, wy1 = int(ylo[new].min()), int(yhi[new].max()) + 1
        wx0, wx1 = int(xlo[new].min()), int(xhi[new].max()) + 1
        score[wy0:wy1, wx0:wx1] -= ref_rectangle_counts(xlo[new], xhi[new], ylo[new], yhi[new],
                                                     wy1 - wy0, wx1 - wx0, wy0, wx0)
    return np.asarray(picks_y, np.int64), np.asarray(picks_x, np.int64), covered


def ref_fallback_chips(boxes, grid):
    """Chips for boxes that fit but have no grid position: the planner's unchanged placement."""
    return fallback_chips(boxes, grid.chip_w, grid.chip_h, grid.width, grid.height)


def ref_upper_bound(hi):
    hi = float(hi) if hi is not None else math.inf
    return math.inf if hi < 0 else hi


def ref_in_valid_range(boxes, valid_range):
    """The rows of ``boxes`` (N, 4) XYXY whose sqrt(w*h) lies in [lo, hi) (hi None/-1/inf: open)."""
    lo, hi = valid_range  # (adapted: a ValidRange unpacks, it does not index)
    lo, hi = float(lo), ref_upper_bound(hi)
    size = np.sqrt((boxes[:, 2] - boxes[:, 0]).astype(np.float64) * (boxes[:, 3] - boxes[:, 1]))
    return boxes[(size >= lo) & (size < hi)]


def ref_rng(seed):
    return None if seed is None else np.random.default_rng(seed)


def ref_positive_chips(boxes, image_size, scale, valid_range, chip_size, stride, seed=None):
    """Frozen (pre-issue-14) :func:`sniper_d2.chips.positive_chips`: same contract, see its docstring;
    one greedy per call (``ref_cover_on_grid``)."""
    ref_check_args(image_size, scale, chip_size, stride)
    boxes = ref_in_valid_range(ref_clean_boxes(boxes, image_size, "ref_positive_chips"), valid_range)
    if len(boxes) == 0:
        return np.zeros((0, 4), np.float32)
    grid = ref_Grid(image_size, scale, chip_size, stride, ref_rng(seed))
    chips, off_grid = ref_cover_on_grid(grid, boxes, min_count=1)
    if len(off_grid):
        # A chip picked on the grid may already hold some of them.
        off_grid = off_grid[~boxes_inside(off_grid, chips).any(axis=1)]
        chips = np.concatenate([chips, ref_fallback_chips(off_grid, grid)])
    return chips


def ref_negative_chips(proposals, image_size, scale, chip_size, stride, positive_chips, min_proposals,
                   seed=None, valid_range=(0.0, None)):
    """Frozen (pre-issue-14) :func:`sniper_d2.chips.negative_chips`: same contract, see its docstring;
    one greedy per call (``ref_cover_on_grid``)."""
    ref_check_args(image_size, scale, chip_size, stride)
    props = ref_in_valid_range(ref_clean_boxes(proposals, image_size, "ref_negative_chips"), valid_range)
    pos = np.asarray(positive_chips, np.float32).reshape(-1, 4)
    if len(pos) and len(props):
        props = props[~boxes_inside(props, pos).any(axis=1)]
    if len(props) < max(int(min_proposals), 1):
        return np.zeros((0, 4), np.float32)
    grid = ref_Grid(image_size, scale, chip_size, stride, ref_rng(seed))
    chips, _ = ref_cover_on_grid(grid, props, min_count=min_proposals)
    return chips


def ref_cover_on_grid(grid, boxes, min_count):
    """Greedily cover, with chips of ``grid``, the boxes that fit a chip.

    Args:
        grid (ref_Grid): the chip grid of one image and scale.
        boxes: (N, 4) float32 XYXY in original-image pixels.
        min_count (int): fewest not-yet-covered boxes a chip must hold to be picked.

    Returns:
        chips: (K, 4) float32 XYXY in original-image pixels, in greedy order.
        off_grid: (M, 4) the boxes that fit a chip but lie inside no grid chip (the stride skips
            every start that would hold them); the caller decides whether they need chips of
            their own (:func:`ref_fallback_chips`).
    """
    boxes = boxes[grid.fits(boxes)]
    xlo, xhi, ylo, yhi = grid.ranges(boxes)
    on_grid = (xlo <= xhi) & (ylo <= yhi)
    iy, ix, _ = ref_greedy_cover(xlo[on_grid], xhi[on_grid], ylo[on_grid], yhi[on_grid],
                              len(grid.y0), len(grid.x0), grid.rng, min_count)
    return grid.chips(iy, ix), boxes[~on_grid]


def ref_plan_image(image_size, boxes, index, params, epochs, seed, proposals=None):
    """All chips of one image, every epoch and scale.

    Args:
        image_size (tuple[int, int]): (height, width).
        boxes: (N, 4) float32 XYXY original pixels, the boxes to cover (crowd boxes left out).
        index (int): the image's index in the records (part of the seeds).
        params (PlanParams), epochs (int), seed (int): see :func:`build_plan`.
        proposals: None, or a list over scale index of (P, 4) proposal boxes (or None).

    Returns:
        list of (epoch, scale_index, scale, (K, 4) float32 chips, is_negative) tuples.
    """
    out = []
    min_props = params.min_proposals()
    for s, (entry, valid_range) in enumerate(zip(params.scales, params.valid_ranges)):
        scale = resolve_scale(entry, image_size, params.chip_size)
        props = None if proposals is None or s >= len(proposals) else proposals[s]
        if props is not None and len(props):
            props = np.asarray(props, np.float32).reshape(-1, 4)
            props = props[off_object_proposals(props, boxes)]  # parts of objects are no clutter
        for e in range(epochs):
            pos = ref_positive_chips(boxes, image_size, scale, valid_range, params.chip_size, params.stride,
                                 seed=[seed, e, index, s])
            out.append((e, s, scale, pos, False))
            if props is not None and len(props):
                neg = ref_negative_chips(props, image_size, scale, params.chip_size, params.stride, pos,
                                     min_props[s], seed=[seed, e, index, s, 1], valid_range=valid_range)
                out.append((e, s, scale, neg, True))
    return out




def _ref_jobs(records, params, epochs, seed, proposals):
    for i, r in enumerate(records):
        size, boxes, props = clean_record_inputs(r, proposals)  # input cleaning is unchanged: shared
        yield size, boxes, i, params, epochs, seed, props


def reference_build_plan(records, params, epochs, seed, proposals=None):
    """The reference planner's ``build_plan`` in one process (its pool and progress bar left out)."""
    proposals_id = proposals_digest(proposals)
    results = [ref_plan_image(*j) for j in _ref_jobs(records, params, epochs, seed, proposals)]
    columns = [[] for _ in range(6)]
    for i, image_rows in enumerate(results):
        for e, s, scale, chips, neg in image_rows:
            k = len(chips)
            for col, value in zip(columns, (np.full(k, e, np.int32), np.full(k, i, np.int32),
                                            np.full(k, s, np.int32), np.full(k, scale, np.float32),
                                            chips.reshape(-1, 4), np.full(k, neg, bool))):
                col.append(value)
    empty = (np.int32, np.int32, np.int32, np.float32, np.float32, bool)
    cat = [np.concatenate(col) if col else np.zeros((0, 4) if j == 4 else 0, empty[j])
           for j, col in enumerate(columns)]
    order = np.argsort(cat[0], kind="stable")  # group by epoch; image order inside
    cat = [c[order] for c in cat]
    return ChipPlan(
        epoch=cat[0], image_index=cat[1], scale_index=cat[2], scale=cat[3],
        chips=cat[4].astype(np.float32).reshape(-1, 4), is_negative=cat[5],
        epochs=int(epochs), config_hash=plan_config_hash(params, epochs, seed, proposals_id),
        dataset_hash=dataset_hash(records))


# ================================================================================================
# End of the reference planner.
# ================================================================================================


# ------------------------------------------------------------------------------------------------
# Part 1: data sets
# ------------------------------------------------------------------------------------------------
KINDS = {
    # name: (boxes per image (Poisson mean), width range, height range, box side range), px
    "COCO-like": (7, (500, 800), (350, 550), (8.0, 400.0)),
    "VisDrone-like": (54, (1360, 2000), (765, 1500), (4.0, 150.0)),
}


def make_records(kind, num_images, seed=0, proposals_per_scale=0):
    """Records as :func:`sniper_d2.coco.load_coco_records` returns them, and proposals (or None).

    Proposals (when asked): per image and scale, ``proposals_per_scale`` boxes of 6-60 px in
    clusters (30 px spread) around 4 random centres (a weak detector's clutter).
    """
    mean_boxes, (w_lo, w_hi), (h_lo, h_hi), (s_lo, s_hi) = KINDS[kind]
    rng = np.random.default_rng([seed, len(kind)])
    records, proposals = [], {}
    for i in range(num_images):
        w, h = int(rng.integers(w_lo, w_hi)), int(rng.integers(h_lo, h_hi))
        n = int(rng.poisson(mean_boxes))
        side = np.exp(rng.uniform(np.log(s_lo), np.log(min(s_hi, h, w)), n))
        aspect = np.exp(rng.uniform(np.log(0.5), np.log(2.0), n))
        bw, bh = np.minimum(side * np.sqrt(aspect), w), np.minimum(side / np.sqrt(aspect), h)
        x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
        records.append({"image_id": i, "height": h, "width": w, "iscrowd": np.zeros(n, bool),
                        "boxes": np.stack([x, y, x + bw, y + bh], 1).astype(np.float32)})
        if proposals_per_scale:
            per_scale = []
            for _ in SCALES:
                centres = rng.uniform([0, 0], [w, h], (4, 2))
                c = centres[rng.integers(0, 4, proposals_per_scale)] + rng.normal(0, 30, (proposals_per_scale, 2))
                s = np.exp(rng.uniform(np.log(6), np.log(60), (proposals_per_scale, 1)))
                p = np.clip(np.concatenate([c, c + s], 1), 0, [w, h, w, h]).astype(np.float32)
                per_scale.append(p[(p[:, 2] > p[:, 0]) & (p[:, 3] > p[:, 1])])
            proposals[i] = per_scale
    return records, (proposals if proposals_per_scale else None)


def check_coverage(plan, records, params):
    """Raise unless every valid box that fits a chip lies inside a positive chip of its (image,
    scale, epoch); return the number of (image, scale, epoch) groups checked."""
    pos = ~plan.is_negative
    key = (plan.image_index.astype(np.int64) * len(params.scales) + plan.scale_index) * plan.epochs + plan.epoch
    order = np.argsort(key[pos], kind="stable")
    keys, chips = key[pos][order], plan.chips[pos][order]
    bounds = np.searchsorted(keys, np.arange((len(records) * len(params.scales)) * plan.epochs + 1))
    checked = 0
    for i, r in enumerate(records):
        size = (r["height"], r["width"])
        boxes = r["boxes"][~r["iscrowd"]]
        side = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
        for s, (entry, (lo, hi)) in enumerate(zip(params.scales, params.valid_ranges)):
            ch, cw = chip_extent(size, resolve_scale(entry, size, params.chip_size), params.chip_size)
            valid = (side >= lo) & (side < (math.inf if hi < 0 else hi))
            valid &= (boxes[:, 2] - boxes[:, 0] <= cw) & (boxes[:, 3] - boxes[:, 1] <= ch)
            for e in range(plan.epochs):
                k = (i * len(params.scales) + s) * plan.epochs + e
                group = chips[bounds[k]:bounds[k + 1]]
                if valid.any() and not boxes_inside(boxes[valid], group).any(axis=1).all():
                    raise AssertionError(f"image {i}, scale #{s}, epoch {e}: a valid box lies in no chip")
                checked += 1
    return checked


def bench_records(kind, num_images, rounds, proposals_per_scale=0):
    records, proposals = make_records(kind, num_images, proposals_per_scale=proposals_per_scale)
    times = {"reference": [], "today": []}
    plans = {}
    build = {"reference": lambda: reference_build_plan(records, PARAMS, EPOCHS, 0, proposals=proposals),
             "today": lambda: build_plan(records, PARAMS, EPOCHS, 0, proposals=proposals, progress=False)}
    build["today"]()  # warm-up (imports, caches)
    for _ in range(rounds):
        for name, fn in build.items():
            start = time.perf_counter()
            plans[name] = fn()
            times[name].append(time.perf_counter() - start)
    per_image = {}
    for name, plan in plans.items():
        check_coverage(plan, records, PARAMS)
        per_image[name] = plan.chips_per_image(num_images, len(SCALES))
    rate = {name: num_images / min(t) for name, t in times.items()}
    boxes = np.mean([len(r["boxes"]) for r in records])
    side = np.mean([np.sqrt(r["height"] * r["width"]) for r in records])
    label = kind + (f" + {proposals_per_scale} proposals/scale" if proposals_per_scale else "")
    print(f"{label:<38} {num_images:>6} {boxes:>6.1f} {side:>6.0f} {rate['reference']:>10.1f} {rate['today']:>10.1f} "
          f"{rate['today'] / rate['reference']:>7.1f}x")
    for name in ("reference", "today"):
        pos = " / ".join(f"{v:.2f}" for v in per_image[name][:, 0])
        neg = " / ".join(f"{v:.2f}" for v in per_image[name][:, 1])
        print(f"    {name:<9} chips per image per epoch at 3x / 1.667x / fit: positive {pos}"
              + (f"; negative {neg}" if proposals_per_scale else ""))


def part1(args):
    print(f"Part 1: planning data sets, one process, {EPOCHS} epochs, scales {SCALES}, chip {CHIP_SIZE}, "
          f"stride {STRIDE}; best of {args.rounds} alternating rounds")
    print(f"{'records':<38} {'images':>6} {'boxes':>6} {'~side':>6} {'ref img/s':>10} {'ours img/s':>10} {'speed-up':>8}")
    bench_records("COCO-like", args.coco_images, args.rounds)
    bench_records("VisDrone-like", args.visdrone_images, args.rounds)
    if args.proposals:
        bench_records("VisDrone-like", max(1, args.visdrone_images // 3), args.rounds, args.proposals)
    print("speed-up: reference planner's time / today's planner's time, same records, same process; "
          "coverage checked for both")


# ------------------------------------------------------------------------------------------------
# Part 2: one 4k image, against the textbook greedy
# ------------------------------------------------------------------------------------------------
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
    """Chips of one 4k image at the three scales, by ``fn`` (positive_chips or the textbook greedy)."""
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


def part2(args):
    print(f"Part 2: 4k image {IMAGE_SIZE[1]}x{IMAGE_SIZE[0]}, scales {SCALES}, chip {CHIP_SIZE}, stride {STRIDE}")
    print(f"{'boxes':>6} {'chips':>6} {'ours ms/img':>12} {'ours seeded':>12} {'textbook ms/img':>16} {'speed-up':>9}")
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
                        raise AssertionError(f"{n} boxes, image {i}: planner and textbook greedy disagree "
                                             f"({len(a)} vs {len(b)} chips)")
        ours_ms = 1e3 * np.mean(ours[: args.ref_images])
        ref_ms = 1e3 * np.mean(ref)
        print(f"{n:>6} {np.mean(num_chips):>6.0f} {1e3 * np.mean(ours):>12.1f} {1e3 * np.mean(ours_seeded):>12.1f} "
              f"{ref_ms:>16.1f} {ref_ms / ours_ms:>8.0f}x")
    print("speed-up: textbook greedy's time / our time on the same images (identical chips checked); "
          "'ours seeded' = with a seed (random grid offset, tie-breaks and placement)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", type=int, choices=(1, 2), help="run only this part (default: both)")
    p.add_argument("--coco-images", type=int, default=400, help="COCO-like images (default: %(default)s)")
    p.add_argument("--visdrone-images", type=int, default=150, help="VisDrone-like images (default: %(default)s)")
    p.add_argument("--proposals", type=int, default=200, metavar="P",
                   help="also VisDrone-like records with P proposals per image and scale, a third as many "
                        "images (0: not) (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=2, help="alternating timing rounds (default: %(default)s)")
    p.add_argument("--boxes", type=int, nargs="+", default=[100, 2000], help="part 2: boxes per 4k image (default: %(default)s)")
    p.add_argument("--images", type=int, default=3, help="part 2: images timed with our planner (default: %(default)s)")
    p.add_argument("--ref-images", type=int, default=1,
                   help="part 2: of those, images also timed with the textbook greedy (slow) (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.part in (None, 1):
        part1(args)
    if args.part in (None, 2):
        part2(args)


if __name__ == "__main__":
    main()
