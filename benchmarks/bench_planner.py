#!/usr/bin/env python
"""The chip planner, side by side with references, in one run.

Three planners on the same inputs, same settings (those of ``configs/sniper_r50_fpn.yaml``: scales 3,
1.667 and fit, valid ranges (0, 80), [32, 150), [120, inf), chip 512, stride 32, 8 epochs):

  * ours: ``sniper_d2.plans.build_plan`` in one process;
  * TODAY'S PLANNER (below): the planner before issue 21 (commit 72b5538), i.e. ``build_plan`` with
    its greedy cover (one pick per cover per step; every step scans every cell and every uncovered
    box) and its chunking swapped back in. Its chips must be identical to ours (asserted): the new
    greedy takes many picks per step but the same picks;
  * PaddleDetection-style (below): one cover per image and scale as PaddleDetection's SNIPER
    ``AnnoCropper`` computes it (ppdet/data/crop_utils): chips on a grid of the scaled image clipped
    at the border, a (chips x boxes) intersection-over-box matrix, and a greedy over it; it plans once
    for the whole training (no re-sampling), so its time is multiplied by the 8 epochs to compare the
    same number of covers. Its grid uses its shipped stride (200 scaled px, ``--paddle-stride``): at
    stride 32 its matrix of a 2,000-box image would need gigabytes.

Part 1, data sets: dense synthetic records, 1360-2000 x 765-1500 px, 100 and 2,000 boxes per image
(sides log-uniform 4-150 px), images per second (best of ``--rounds`` alternating rounds) and chips
per image per epoch. Our plan is checked (every valid box that fits a chip lies inside a chip of its
image, scale and epoch) and equal to today's.

Part 2, one orthomosaic: 30,000 x 30,000 px, 100,000 objects (95% of sides 8-60 px, 5% 60-300 px),
3 scales x 8 epochs, planned by ours (target: under 10 s), coverage checked; today's planner on
``--ref-ortho-epochs`` epochs (default 1: about a minute; its 8 epochs would take ~8x that), its
chips checked identical to our first epoch's.

Example:
    python benchmarks/bench_planner.py                    # both parts, a few minutes on 2 cores
    python benchmarks/bench_planner.py --part 2 --ref-ortho-epochs 0
"""

import argparse
import contextlib
import logging
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from results_store import add_results_argument, save_benchmark_results  # noqa: E402
from sniper_d2 import chips, plans  # noqa: E402
from sniper_d2.chips import chip_extent, in_valid_range, resolve_scale  # noqa: E402
from sniper_d2.config_types import FIT_SCALE  # noqa: E402
from sniper_d2.plans import PlanParams, build_plan, clean_record_inputs  # noqa: E402

logger = logging.getLogger("bench_planner")

SCALES = (3.0, 1.667, FIT_SCALE)
VALID_RANGES = ((0.0, 80.0), (32.0, 150.0), (120.0, -1.0))
CHIP_SIZE, STRIDE = 512, 32
EPOCHS = 8
PARAMS = PlanParams(scales=SCALES, valid_ranges=VALID_RANGES, chip_size=CHIP_SIZE, stride=STRIDE,
                    neg_min_proposals=(25, 10, 10))


# ================================================================================================
# TODAY'S PLANNER: the greedy cover and chunking of commit 72b5538 (before issue 21), copied
# unchanged apart from the ``ref`` prefix and the ``chips.`` / ``plans.`` qualifiers of the helpers
# they call (unchanged since). Kept only to time and check against; do not edit.
# ================================================================================================
def ref_rectangle_counts(p, y0, y1, x0, x1, shape):
    """(P, ny, nx) float32: how many of the rectangles ``[y0, y1] x [x0, x1]`` of row ``p`` hold
    each cell (a difference array and two cumulative sums)."""
    num, ny, nx = shape
    row, plane = nx + 1, (ny + 1) * (nx + 1)
    base = p * plane
    corners = np.concatenate([base + y0 * row + x0, base + y0 * row + x1 + 1,
                              base + (y1 + 1) * row + x0, base + (y1 + 1) * row + x1 + 1])
    weights = np.repeat([1.0, -1.0, -1.0, 1.0], len(p))
    diff = np.bincount(corners, weights=weights, minlength=num * plane).astype(np.float32).reshape(num, ny + 1, row)
    return np.ascontiguousarray(np.cumsum(np.cumsum(diff, axis=1), axis=2)[:, :ny, :nx])


def ref_subtract_rectangles(score, p, y0, y1, x0, x1):
    """``score[p[k], y0[k]:y1[k] + 1, x0[k]:x1[k] + 1] -= 1`` for every k, in place (no Python loop).

    Cell by cell when the rectangles are small, else through a difference array of the whole
    grid; both are exact (integers subtracted from float32 counts plus fractions below 0.5).
    """
    _, ny, nx = score.shape
    w = x1 - x0 + 1
    area = (y1 - y0 + 1) * w
    if int(area.sum()) * 4 > score.size:
        score -= ref_rectangle_counts(p, y0, y1, x0, x1, score.shape)
        return
    k = np.repeat(np.arange(len(p)), area)
    local = np.arange(int(area.sum())) - np.repeat(np.cumsum(area) - area, area)
    r, c = np.divmod(local, w[k])
    flat = score.reshape(-1)
    assert np.shares_memory(flat, score), "score must be C-contiguous"
    np.subtract.at(flat, (p[k] * ny + y0[k] + r) * nx + x0[k] + c, np.float32(1.0))


def ref_greedy_cover(grids, ranges, live, min_count):
    """Greedy set cover of the live boxes by grid cells, every problem (row) at once, in lockstep.

    Each pick of problem p takes a cell covered by the most of its not-yet-covered boxes; it stops
    when the best cell covers fewer than ``min_count[p]`` (>= 1). Without a seed, ties go to the
    first cell in row-major order. With a seed, ties between cells covering different boxes go to
    the cell of highest random priority (the sum of a random number drawn per grid row and one per
    grid column), and the pick is then placed uniformly at random among the cells that cover the
    same boxes (so objects do not always sit at a chip's border). A problem's picks do not depend
    on the other problems.

    Counting works on a compressed grid (see :func:`chips._compress`): rows and columns are the box
    ranges' lower ends, counts come from a difference array, and a pick subtracts the rectangles
    of the boxes it newly covered. Rows whose cover is finished are dropped as they accumulate.

    Args:
        grids (_Grids). ranges: (xlo, xhi, ylo, yhi) (P, N) int64 from ``grids.ranges``.
        live: (P, N) bool, the boxes to cover (each with a non-empty range).
        min_count: (P,) int.

    Returns:
        (p, iy, ix) int64 arrays: the picked cells, grouped by problem, in pick order within one.
    """
    xlo, xhi, ylo, yhi = ranges
    num = len(live)
    if not live.any():
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    ux, cxlo, cxhi = chips._compress(xlo, xhi, live, grids.x0.shape[1])
    uy, cylo, cyhi = chips._compress(ylo, yhi, live, grids.y0.shape[1])
    ny, nx = uy.shape[1], ux.shape[1]
    p, n = np.nonzero(live)
    # One column per (problem, box) still to cover: row of `score`, compressed ranges, column of `real`.
    # (A box holds cell (by, bx) when 0 <= by - cylo <= cyhi - cylo: one unsigned comparison per axis.)
    todo = np.stack([p, cylo[p, n], cyhi[p, n] - cylo[p, n], cxlo[p, n], cxhi[p, n] - cxlo[p, n],
                     np.arange(len(p))]).astype(np.int32)
    real = np.stack([ylo[p, n], xlo[p, n], yhi[p, n], xhi[p, n]]).astype(np.int32)  # real index ranges
    score = ref_rectangle_counts(p, cylo[p, n], cyhi[p, n], cxlo[p, n], cxhi[p, n], (num, ny, nx))
    seeded = grids.seeded
    if seeded.any():
        # Tie-break priority of a cell: a random number per grid row plus one per grid column (each
        # in [0, 0.25), a function of the real position, whatever the padding): cheap to draw.
        keys = grids.keys[:, None]
        row_prio = (0.25 * seeded)[:, None] * chips._uniforms(keys, chips._PRIORITY, uy << 1)
        col_prio = (0.25 * seeded)[:, None] * chips._uniforms(keys, chips._PRIORITY, (ux << 1) + 1)
        score += (row_prio[:, :, None] + col_prio[:, None, :]).astype(np.float32)
        place = seeded[:, None, None] * chips._uniforms(grids.keys[:, None, None], chips._PLACE,
                                                  np.arange(2 * live.shape[1]).reshape(1, -1, 2))
    if num == 1:
        need = max(int(np.asarray(min_count).reshape(-1)[0]), 1)
        iy, ix = ref_greedy_cover_one(score, todo, real, need, place[0] if seeded.any() else None)
        return np.zeros(len(iy), np.int64), iy, ix
    problem = np.arange(num)  # problem of each row of `score`
    need = np.maximum(np.asarray(min_count, np.int64), 1).astype(np.float32)
    picks = []
    step = 0
    while todo.shape[1]:
        flat = score.reshape(len(score), -1)  # a view: updates of `score` show in `flat`
        best = flat.argmax(axis=1)
        active = flat[np.arange(len(flat)), best] >= need
        if not active.any():
            break
        if active.sum() * 2 < len(score) and len(score) > 8:
            # Drop finished rows (they never pick again): smaller arrays for the steps to come.
            keep = np.flatnonzero(active)
            renumber = np.cumsum(active) - 1
            todo = todo[:, active[todo[0]]]
            todo[0] = renumber[todo[0]]
            score, best, problem, need = score[keep], best[keep], problem[keep], need[keep]
            if seeded.any():
                place = place[keep]
            active = np.ones(len(keep), bool)
        by, bx = np.divmod(best, nx)
        g = todo[0]
        hit = (((by.astype(np.int32)[g] - todo[1]).view(np.uint32) <= todo[2].view(np.uint32))
               & ((bx.astype(np.int32)[g] - todo[3]).view(np.uint32) <= todo[4].view(np.uint32)))
        if not active.all():
            hit &= active[g]
        done, todo = todo[:, hit], todo[:, ~hit]
        # The real cells covering exactly the boxes just covered: a rectangle per active row.
        d = done[0]
        first = np.flatnonzero(np.concatenate([[True], d[1:] != d[:-1]]))
        ranges = real[:, done[5]]
        lo = np.maximum.reduceat(ranges[:2], first, axis=1)
        act = d[first]
        if seeded.any():
            hi = np.minimum.reduceat(ranges[2:], first, axis=1)
            lo = lo + (place[act, step].T * (hi - lo + 1)).astype(np.int32)
        picks.append(np.stack([problem[act], lo[0], lo[1]]))
        ref_subtract_rectangles(score, done[0], done[1], done[1] + done[2], done[3], done[3] + done[4])
        step += 1
    if not picks:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    picks = np.concatenate(picks, axis=1).astype(np.int64)
    picks = picks[:, np.argsort(picks[0], kind="stable")]
    return picks[0], picks[1], picks[2]


def ref_greedy_cover_one(score, todo, real, need, place):
    """The loop of :func:`ref_greedy_cover` for a single cover, with scalar steps (the same picks;
    a single call, e.g. :func:`positive_chips`, is dominated by the cost per numpy operation).

    Args:
        score: (1, ny, nx) float32. todo: (6, R) int32 and real: (4, R) int32 as in _greedy_cover.
        need (int): min_count. place: (N, 2) float64 placement draws, or None without a seed.

    Returns:
        (iy, ix) int64 arrays of the picked cells.
    """
    flat = score.reshape(-1)
    nx = score.shape[2]
    picks = []
    while todo.shape[1]:
        best = int(flat.argmax())
        if flat[best] < need:
            break
        by, bx = divmod(best, nx)
        hit = (((by - todo[1]).view(np.uint32) <= todo[2].view(np.uint32))
               & ((bx - todo[3]).view(np.uint32) <= todo[4].view(np.uint32)))
        done, todo = todo[:, hit], todo[:, ~hit]
        ranges = real[:, done[5]]
        y, x = int(ranges[0].max()), int(ranges[1].max())
        if place is not None:
            u, v = place[len(picks)]
            y += int(u * (int(ranges[2].min()) - y + 1))
            x += int(v * (int(ranges[3].min()) - x + 1))
        picks.append((y, x))
        if done.shape[1] == 1:
            y0, x0 = int(done[1, 0]), int(done[3, 0])
            score[0, y0:y0 + int(done[2, 0]) + 1, x0:x0 + int(done[4, 0]) + 1] -= 1
        else:
            ref_subtract_rectangles(score, done[0], done[1], done[1] + done[2], done[3], done[3] + done[4])
    picks = np.asarray(picks, np.int64).reshape(-1, 2)
    return picks[:, 0], picks[:, 1]


def ref_chunks(jobs, problems_per_image, workers):
    """Groups of images planned in one call: images of similar box counts together (the covers of a
    call are padded to its largest), each group's padded score arrays about ``_CELLS_PER_CHUNK``
    cells at most, and at most ``_MAX_IMAGES_PER_CHUNK`` images (fewer with ``workers`` processes,
    so that each gets several groups)."""
    cells, max_images = plans._CELLS_PER_CHUNK, plans._MAX_IMAGES_PER_CHUNK
    if workers > 0:
        max_images = min(max_images, max(16, -(-len(jobs) // (4 * workers))))
    props = [max([len(p) for p in j[3] or () if p is not None], default=0) for j in jobs]
    cost = problems_per_image * ((np.asarray([len(j[1]) for j in jobs]) + 1) ** 2 + (np.asarray(props) + 1) ** 2)
    chunks, current = [], []
    for k in np.argsort(cost, kind="stable"):
        if current and ((len(current) + 1) * cost[k] > cells or len(current) >= max_images):
            chunks.append(current)
            current = []
        current.append(jobs[k])
    return chunks + [current] if current else chunks


@contextlib.contextmanager
def todays_planner():
    """``build_plan`` runs today's planner inside this block: its greedy and chunking swapped in,
    epochs never split (module attributes of our own package, restored on exit)."""
    saved = chips._greedy_cover, plans._chunks, plans._epoch_groups
    chips._greedy_cover = ref_greedy_cover
    plans._chunks = lambda jobs, params, epochs, workers: ref_chunks(jobs, epochs * len(params.scales), workers)
    plans._epoch_groups = lambda epochs, cells: [np.arange(epochs)]
    try:
        yield
    finally:
        chips._greedy_cover, plans._chunks, plans._epoch_groups = saved


# ================================================================================================
# PaddleDetection-style cover (the algorithm of ppdet/data/crop_utils, written plainly here).
# ================================================================================================
def paddle_style_chips(boxes, image_size, scale, valid_range, chip_size, stride):
    """One cover of one image at one scale as PaddleDetection's ``AnnoCropper`` computes it.

    Chips start every ``stride`` scaled px (the last kept only when more than 20 px remain), are
    clipped at the border (not shifted inward); every valid box is tested against every chip
    (intersection over box area); the greedy takes the chip holding the most not-yet-covered boxes
    (iob >= 1) until every box inside some chip is covered. Valid boxes: our ``valid_range``.

    Returns:
        (K, 4) float32 XYXY chips in original pixels.
    """
    h, w = image_size
    width, height = int(scale * w), int(scale * h)
    overlap = chip_size - stride

    def steps(n):
        rounding = math.ceil if (n - overlap) % stride > 20 else math.floor
        return max(1, int(rounding((n - overlap) / stride)))

    ys, xs = np.meshgrid(np.arange(steps(height)) * stride, np.arange(steps(width)) * stride, indexing="ij")
    x0, y0 = xs.ravel().astype(np.float32), ys.ravel().astype(np.float32)
    grid = np.stack([x0, y0, np.minimum(x0 + chip_size, width), np.minimum(y0 + chip_size, height)], 1) / scale
    boxes = boxes[in_valid_range(boxes, valid_range)]
    inter = np.clip(np.minimum(grid[:, None, 2:], boxes[None, :, 2:]) - np.maximum(grid[:, None, :2], boxes[None, :, :2]),
                    0, None)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    iob = inter[..., 0] * inter[..., 1] / area[None, :]
    chip_ids, box_ids = np.nonzero(iob >= 1.0)
    chosen = []
    while len(box_ids):
        best = int(np.argmax(np.bincount(chip_ids)))
        chosen.append(best)
        keep = ~np.isin(box_ids, box_ids[chip_ids == best])
        chip_ids, box_ids = chip_ids[keep], box_ids[keep]
    return grid[chosen].astype(np.float32)


def paddle_style_plan(records, stride):
    """Number of chips of every image at every scale, one cover each (Paddle plans once)."""
    count = 0
    for r in records:
        size, boxes, _ = clean_record_inputs(r)
        for entry, valid_range in zip(PARAMS.scales, PARAMS.valid_ranges):
            scale = resolve_scale(entry, size, CHIP_SIZE)
            count += len(paddle_style_chips(boxes, size, scale, valid_range, CHIP_SIZE, stride))
    return count


# ------------------------------------------------------------------------------------------------
# Inputs and checks
# ------------------------------------------------------------------------------------------------
def make_records(num_images, boxes_per_image, seed=0):
    """Dense records as :func:`sniper_d2.coco.load_coco_records` returns them: 1360-2000 x 765-1500
    px images, ``boxes_per_image`` boxes each, sides log-uniform 4-150 px, aspect 1:2 to 2:1."""
    rng = np.random.default_rng([seed, boxes_per_image])
    records = []
    for i in range(num_images):
        w, h = int(rng.integers(1360, 2000)), int(rng.integers(765, 1500))
        records.append(_record(i, h, w, _boxes(rng, boxes_per_image, h, w, np.full(boxes_per_image, 4.0),
                                               np.full(boxes_per_image, 150.0))))
    return records


def make_orthomosaic(side=30_000, num_objects=100_000, seed=0):
    """One record: a ``side`` x ``side`` px orthomosaic with ``num_objects`` boxes, 95% of sides
    log-uniform 8-60 px (cars, trees), 5% 60-300 px (buildings)."""
    rng = np.random.default_rng([seed, side, num_objects])
    large = rng.random(num_objects) < 0.05
    lo, hi = np.where(large, 60.0, 8.0), np.where(large, 300.0, 60.0)
    return [_record(0, side, side, _boxes(rng, num_objects, side, side, lo, hi))]


def _boxes(rng, n, h, w, lo, hi):
    side = np.exp(rng.uniform(np.log(lo), np.log(hi), n))
    aspect = np.exp(rng.uniform(np.log(0.5), np.log(2.0), n))
    bw, bh = np.minimum(side * np.sqrt(aspect), w), np.minimum(side / np.sqrt(aspect), h)
    x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
    return np.stack([x, y, x + bw, y + bh], 1).astype(np.float32)


def _record(i, h, w, boxes):
    return {"image_id": i, "height": h, "width": w, "iscrowd": np.zeros(len(boxes), bool), "boxes": boxes}


def inside_any(boxes, chips_, chip_w, chip_h):
    """(N,) bool: box n lies inside at least one of ``chips_`` (all at most ``chip_w`` x ``chip_h``),
    without a (boxes x chips) matrix: chips are bucketed by their corner on a grid of chip-sized
    cells, and a chip holding a box starts in one of the 2 x 2 cells around the box's corner."""
    if not len(chips_) or not len(boxes):
        return np.zeros(len(boxes), bool)
    cell = np.array([chip_w, chip_h], np.float64)
    key_of = lambda ix, iy: iy * (1 << 20) + ix  # noqa: E731
    ci = np.floor(chips_[:, :2] / cell).astype(np.int64)
    ckey = key_of(ci[:, 0], ci[:, 1])
    order = np.argsort(ckey, kind="stable")
    ckey, chips_ = ckey[order], chips_[order]
    bi = np.floor(boxes[:, :2] / cell).astype(np.int64)
    found = np.zeros(len(boxes), bool)
    for dy in (0, -1):
        for dx in (0, -1):
            key = key_of(bi[:, 0] + dx, bi[:, 1] + dy)
            lo, hi = np.searchsorted(ckey, key, "left"), np.searchsorted(ckey, key, "right")
            count = hi - lo
            box = np.repeat(np.arange(len(boxes)), count)
            c = chips_[lo[box] + np.arange(len(box)) - np.repeat(np.cumsum(count) - count, count)]
            b = boxes[box]
            hit = (b[:, 0] >= c[:, 0]) & (b[:, 1] >= c[:, 1]) & (b[:, 2] <= c[:, 2]) & (b[:, 3] <= c[:, 3])
            found[box[hit]] = True
    return found


def check_coverage(plan, records):
    """Raise unless every valid box that fits a chip lies inside a positive chip of its (image,
    scale, epoch); return the number of boxes checked."""
    pos = ~plan.is_negative
    checked = 0
    for i, r in enumerate(records):
        size = (r["height"], r["width"])
        boxes = r["boxes"][~r["iscrowd"]]
        mine = pos & (plan.image_index == i)
        for s, (entry, valid_range) in enumerate(zip(PARAMS.scales, PARAMS.valid_ranges)):
            ch, cw = chip_extent(size, resolve_scale(entry, size, CHIP_SIZE), CHIP_SIZE)
            valid = in_valid_range(boxes, valid_range)
            valid &= (boxes[:, 2] - boxes[:, 0] <= cw) & (boxes[:, 3] - boxes[:, 1] <= ch)
            for e in range(plan.epochs):
                group = plan.chips[mine & (plan.scale_index == s) & (plan.epoch == e)]
                if not inside_any(boxes[valid], group, cw, ch).all():
                    raise AssertionError(f"image {i}, scale #{s}, epoch {e}: a valid box lies in no chip")
                checked += int(valid.sum())
    return checked


def assert_same_chips(ours, today, what):
    for k in ("epoch", "image_index", "scale_index", "chips", "is_negative"):
        if not np.array_equal(getattr(ours, k), getattr(today, k)):
            raise AssertionError(f"{what}: our plan and today's differ in {k}")


def per_epoch_chips(plan, num_images):
    """Positive chips per image per epoch at each scale, a list."""
    return [round(float(v), 2) for v in plan.chips_per_image(num_images, len(SCALES))[:, 0]]


# ------------------------------------------------------------------------------------------------
# Part 1: data sets
# ------------------------------------------------------------------------------------------------
def bench_records(boxes_per_image, num_images, rounds, paddle_stride):
    records = make_records(num_images, boxes_per_image)

    def ours():
        return build_plan(records, PARAMS, EPOCHS, 0, progress=False)

    def today():
        with todays_planner():
            return build_plan(records, PARAMS, EPOCHS, 0, progress=False)

    runs = {"ours": ours, "today": today, "paddle": lambda: paddle_style_plan(records, paddle_stride)}
    times = {name: [] for name in runs}
    out = {}
    ours()  # warm-up (imports, caches)
    for _ in range(rounds):
        for name, fn in runs.items():
            start = time.perf_counter()
            out[name] = fn()
            times[name].append(time.perf_counter() - start)
    assert_same_chips(out["ours"], out["today"], f"{boxes_per_image} boxes per image")
    check_coverage(out["ours"], records)
    rate = {"ours": num_images / min(times["ours"]), "today": num_images / min(times["today"]),
            "paddle": num_images / (EPOCHS * min(times["paddle"]))}
    row = {"boxes_per_image": boxes_per_image, "images": num_images,
           "images_per_s": {k: round(v, 2) for k, v in rate.items()},
           "speedup_vs_today": round(rate["ours"] / rate["today"], 2),
           "speedup_vs_paddle": round(rate["ours"] / rate["paddle"], 2),
           "chips_per_image_per_epoch": per_epoch_chips(out["ours"], num_images),
           "paddle_chips_per_image": round(out["paddle"] / num_images, 2)}
    print(f"{boxes_per_image:>6} {num_images:>6} {rate['ours']:>10.2f} {rate['today']:>10.2f} {rate['paddle']:>10.2f} "
          f"{row['speedup_vs_today']:>8.2f}x {row['speedup_vs_paddle']:>8.2f}x")
    print(f"    chips per image per epoch at 3x / 1.667x / fit: ours = today's {row['chips_per_image_per_epoch']} "
          f"(identical plans); PaddleDetection-style {row['paddle_chips_per_image']} per image, all scales")
    return row


def part1(args):
    print(f"Part 1: planning dense data sets, one process, {EPOCHS} epochs, scales {SCALES}, chip {CHIP_SIZE}, "
          f"stride {STRIDE} (PaddleDetection-style: stride {args.paddle_stride}); best of {args.rounds} "
          "alternating rounds")
    print(f"{'boxes':>6} {'images':>6} {'ours img/s':>10} {'today img/s':>10} {'paddle img/s':>10} "
          f"{'vs today':>9} {'vs paddle':>9}")
    rows = [bench_records(n, k, args.rounds, args.paddle_stride)
            for n, k in ((100, args.images_100), (2000, args.images_2000))]
    print("img/s: images planned per second for 8 epochs of covers (PaddleDetection-style: one pass timed, "
          "divided by 8); our chips checked identical to today's and covering every valid box")
    return rows


# ------------------------------------------------------------------------------------------------
# Part 2: one orthomosaic
# ------------------------------------------------------------------------------------------------
def part2(args):
    records = make_orthomosaic(args.ortho_side, args.ortho_objects)
    print(f"Part 2: one {args.ortho_side} x {args.ortho_side} px orthomosaic, {args.ortho_objects} objects, "
          f"scales {SCALES}, {EPOCHS} epochs")
    start = time.perf_counter()
    plan = build_plan(records, PARAMS, EPOCHS, 0, progress=False)
    seconds = time.perf_counter() - start
    checked = check_coverage(plan, records)
    result = {"side_px": args.ortho_side, "objects": args.ortho_objects, "epochs": EPOCHS,
              "ours_s": round(seconds, 2), "target_s": 10.0, "chips": len(plan),
              "chips_per_epoch": per_epoch_chips(plan, 1), "boxes_checked": checked}
    print(f"ours: {seconds:.2f} s for {EPOCHS} epochs ({len(plan)} chips; per epoch at 3x / 1.667x / fit: "
          f"{result['chips_per_epoch']}); every valid box covered ({checked} box-epochs checked); target < 10 s")
    if args.ref_ortho_epochs:
        start = time.perf_counter()
        with todays_planner():
            ref = build_plan(records, PARAMS, args.ref_ortho_epochs, 0, progress=False)
        ref_seconds = time.perf_counter() - start
        first = plan.epoch < args.ref_ortho_epochs
        same = all(np.array_equal(getattr(plan, k)[first], getattr(ref, k)) for k in ("scale_index", "chips"))
        if not same:
            raise AssertionError("orthomosaic: today's chips differ from ours")
        per_epoch = ref_seconds / args.ref_ortho_epochs
        result.update(today_s=round(ref_seconds, 2), today_epochs=args.ref_ortho_epochs,
                      speedup_per_epoch=round(per_epoch / (seconds / EPOCHS), 1))
        print(f"today's planner: {ref_seconds:.2f} s for {args.ref_ortho_epochs} epoch(s) (identical chips): "
              f"{result['speedup_per_epoch']}x slower per epoch; {EPOCHS} epochs would take about "
              f"{per_epoch * EPOCHS:.0f} s")
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", type=int, choices=(1, 2), help="run only this part (default: both)")
    p.add_argument("--images-100", type=int, default=200, help="images of 100 boxes (default: %(default)s)")
    p.add_argument("--images-2000", type=int, default=12, help="images of 2,000 boxes (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=2, help="alternating timing rounds (default: %(default)s)")
    p.add_argument("--paddle-stride", type=int, default=200,
                   help="grid step of the PaddleDetection-style cover, scaled px (default: %(default)s, its own)")
    p.add_argument("--ortho-side", type=int, default=30_000, help="orthomosaic side, px (default: %(default)s)")
    p.add_argument("--ortho-objects", type=int, default=100_000, help="objects in it (default: %(default)s)")
    p.add_argument("--ref-ortho-epochs", type=int, default=1,
                   help="epochs of the orthomosaic planned by today's planner (0: skip it) (default: %(default)s)")
    add_results_argument(p, "bench_planner")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    figures = {}
    if args.part in (None, 1):
        figures["data_sets"] = part1(args)
    if args.part in (None, 2):
        figures["orthomosaic"] = part2(args)
    save_benchmark_results("bench_planner", figures, args.results)


if __name__ == "__main__":
    main()
