"""Chip cover: the coverage contract, bounds, seeds, degenerate input, and an oracle."""

import logging

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sniper_d2.chips import (batch_positive_chips, boxes_inside, chip_extent, in_valid_range, negative_chips,
                             off_object_proposals, positive_chips, resolve_scale)
from sniper_d2.coco import sanitize_boxes
from sniper_d2.config_types import FIT_SCALE

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


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


def reference_positive_chips(boxes, image_size, scale, valid_range, chip_size, stride):
    """The textbook greedy, written plainly: every pick tests every candidate chip against every
    uncovered box and takes the first (row-major) chip holding the most; boxes no grid chip holds get
    a chip in the middle of the starts that hold them. Same contract as ``positive_chips(...,
    seed=None)`` for clean boxes; (K, 4) float32 XYXY chips in original pixels, in pick order."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    h, w = image_size
    ch, cw = chip_extent(image_size, scale, chip_size)
    bw = (boxes[:, 2] - boxes[:, 0]).astype(np.float64)
    bh = (boxes[:, 3] - boxes[:, 1]).astype(np.float64)
    boxes = boxes[in_valid_range(boxes, valid_range) & (bw <= cw) & (bh <= ch)]
    x0, x1 = _axis_positions(w, cw, stride / scale)
    y0, y1 = _axis_positions(h, ch, stride / scale)
    gy, gx = np.meshgrid(np.arange(len(y0)), np.arange(len(x0)), indexing="ij")
    candidates = np.stack([x0[gx.ravel()], y0[gy.ravel()], x1[gx.ravel()], y1[gy.ravel()]], 1)
    uncovered, chips = boxes, []
    while len(uncovered):
        counts = boxes_inside(uncovered, candidates).sum(axis=0)
        best = int(counts.argmax())
        if counts[best] == 0:
            break  # the rest have no grid position
        chips.append(candidates[best])
        uncovered = uncovered[~boxes_inside(uncovered, candidates[best:best + 1])[:, 0]]
    for b in uncovered:
        if chips and boxes_inside(b[None], np.stack(chips)).any():
            continue
        b64 = b.astype(np.float64)
        sx = 0.5 * (max(b64[2] - cw, 0.0) + max(min(b64[0], w - cw), max(b64[2] - cw, 0.0)))
        sy = 0.5 * (max(b64[3] - ch, 0.0) + max(min(b64[1], h - ch), max(b64[3] - ch, 0.0)))
        chips.append(np.array([min(np.float32(sx), b[0]), min(np.float32(sy), b[1]),
                               max(min(np.float32(sx + cw), np.float32(w)), b[2]),
                               max(min(np.float32(sy + ch), np.float32(h)), b[3])], np.float32))
    return np.stack(chips).astype(np.float32) if chips else np.zeros((0, 4), np.float32)


def valid_mask(boxes, image_size, scale, valid_range, chip_size):
    """Oracle of which boxes the contract promises to cover."""
    ch, cw = chip_extent(image_size, scale, chip_size)
    w = (boxes[:, 2] - boxes[:, 0]).astype(np.float64)
    h = (boxes[:, 3] - boxes[:, 1]).astype(np.float64)
    size = np.sqrt(w * h)
    hi = np.inf if valid_range[1] in (None, -1) else valid_range[1]
    return (size >= valid_range[0]) & (size < hi) & (w <= cw) & (h <= ch) & (w > 0) & (h > 0)


def assert_chip_bounds(chips, image_size, scale, chip_size):
    h, w = image_size
    ch, cw = chip_extent(image_size, scale, chip_size)
    assert chips.dtype == np.float32 and chips.shape[1] == 4
    assert (chips[:, 0] >= 0).all() and (chips[:, 1] >= 0).all()
    assert (chips[:, 2] <= w).all() and (chips[:, 3] <= h).all()
    np.testing.assert_allclose(chips[:, 2] - chips[:, 0], cw, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(chips[:, 3] - chips[:, 1], ch, rtol=1e-5, atol=1e-3)


@st.composite
def scenes(draw, max_side=6000, max_boxes=60):
    """(boxes, image_size, scale, valid_range, chip_size, stride): random, border and duplicate boxes."""
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    chip_size = draw(st.sampled_from([32, 64, 128, 256, 512]))
    stride = draw(st.sampled_from([4, 8, 16, 32, 48]))
    scale = draw(st.one_of(st.floats(0.05, 4.0), st.just(FIT_SCALE)))
    scale = resolve_scale(scale, (h, w), chip_size)
    lo = draw(st.sampled_from([0.0, 2.0, 10.0, 40.0]))
    hi = draw(st.sampled_from([-1, np.inf, 30.0, 120.0, 1e4]))
    if hi != -1 and hi <= lo:
        hi = -1
    n = draw(st.integers(0, max_boxes))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    size = np.exp(rng.uniform(np.log(0.5), np.log(max(1.0, 1.2 * max(h, w))), n))
    aspect = np.exp(rng.uniform(-1, 1, n))
    bw = np.minimum(size * np.sqrt(aspect), w)
    bh = np.minimum(size / np.sqrt(aspect), h)
    x0 = rng.uniform(0, w - bw)
    y0 = rng.uniform(0, h - bh)
    boxes = np.stack([x0, y0, x0 + bw, y0 + bh], 1)
    if n:
        # Snap some boxes to the image border, duplicate some.
        snap = rng.random(n) < 0.2
        boxes[snap, 0] = 0
        boxes[rng.random(n) < 0.2, 2] = w
        boxes[rng.random(n) < 0.2, 3] = h
        dup = rng.integers(0, n, size=n // 4)
        boxes = np.concatenate([boxes, boxes[dup]])
    return boxes.astype(np.float32), (h, w), scale, (lo, hi), chip_size, stride


@SETTINGS
@given(scenes(), st.one_of(st.none(), st.integers(0, 1000)))
def test_every_valid_box_that_fits_is_inside_a_chip(scene, seed):
    boxes, image_size, scale, valid_range, chip_size, stride = scene
    chips = positive_chips(boxes, image_size, scale, valid_range, chip_size, stride, seed=seed)
    valid = valid_mask(boxes, image_size, scale, valid_range, chip_size)
    if valid.any():
        assert boxes_inside(boxes[valid], chips).any(axis=1).all()
    else:
        assert len(chips) == 0


@SETTINGS
@given(scenes(), st.one_of(st.none(), st.integers(0, 1000)))
def test_chips_are_full_size_and_inside_the_image(scene, seed):
    boxes, image_size, scale, valid_range, chip_size, stride = scene
    chips = positive_chips(boxes, image_size, scale, valid_range, chip_size, stride, seed=seed)
    assert_chip_bounds(chips, image_size, scale, chip_size)
    # Greedy: never more chips than boxes to cover, and no chip without a valid box inside.
    valid = valid_mask(boxes, image_size, scale, valid_range, chip_size)
    assert len(chips) <= valid.sum()
    if len(chips):
        assert boxes_inside(boxes[valid], chips).any(axis=0).all()


@SETTINGS
@given(scenes(), st.integers(0, 1000))
def test_same_seed_gives_same_chips(scene, seed):
    a = positive_chips(*scene, seed=seed)
    b = positive_chips(*scene, seed=seed)
    np.testing.assert_array_equal(a, b)


def _dense_scene(seed=0, n=200):
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(100, 3700, n), rng.uniform(100, 2000, n)
    s = rng.uniform(5, 40, n)
    return np.stack([x, y, x + s, y + s], 1).astype(np.float32)


def test_different_seeds_give_different_chips():
    boxes = _dense_scene()
    results = [positive_chips(boxes, (2160, 3840), 2.0, (0, 80), 512, 32, seed=s) for s in range(5)]
    distinct = {r.tobytes() for r in results}
    assert len(distinct) == 5
    for r in results:  # every seed still honours the contract
        assert boxes_inside(boxes, r).any(axis=1).all()


@SETTINGS
@given(scenes(max_side=3000, max_boxes=40))
def test_matches_the_straightforward_greedy_reference(scene):
    boxes, image_size, scale, valid_range, chip_size, stride = scene
    ours = positive_chips(boxes, image_size, scale, valid_range, chip_size, stride)
    clipped, keep, _ = sanitize_boxes(boxes, image_size)
    ref = reference_positive_chips(clipped[keep], image_size, scale, valid_range, chip_size, stride)
    np.testing.assert_array_equal(ours, ref)


def test_greedy_first_pick_holds_the_most_boxes():
    # Three boxes clustered in one chip, one far away: the cluster's chip comes first.
    boxes = np.array([[100, 100, 110, 110], [130, 120, 140, 130], [150, 150, 160, 160],
                      [900, 900, 910, 910]], np.float32)
    chips = positive_chips(boxes, (1000, 1000), 1.0, (0, -1), 128, 16)
    assert len(chips) == 2
    assert boxes_inside(boxes[:3], chips[:1]).all()


def test_no_boxes_and_no_valid_boxes_give_no_chips():
    assert positive_chips(np.zeros((0, 4)), (100, 100), 1.0, (0, -1), 64, 8).shape == (0, 4)
    big = np.array([[0, 0, 90, 90]], np.float32)
    assert len(positive_chips(big, (100, 100), 1.0, (0, 50), 64, 8)) == 0  # outside the range
    assert len(positive_chips(big, (100, 100), 1.0, (0, -1), 64, 8)) == 0  # does not fit a chip


def test_box_as_large_as_a_chip_off_the_grid_is_covered():
    # Chip 100 px, grid every 64 px: a 100 px box at x=37 has exactly one position (37), off grid.
    boxes = np.array([[37, 37, 137, 137], [10, 300, 20, 310]], np.float32)
    chips = positive_chips(boxes, (1000, 1000), 1.0, (0, -1), 100, 64)
    assert boxes_inside(boxes, chips).any(axis=1).all()
    assert_chip_bounds(chips, (1000, 1000), 1.0, 100)


def test_fit_scale_gives_one_whole_image_chip():
    boxes = _dense_scene(n=30)
    scale = resolve_scale(FIT_SCALE, (2160, 3840), 512)
    assert scale == pytest.approx(512 / 3840)
    chips = positive_chips(boxes, (2160, 3840), scale, (0, -1), 512, 32, seed=3)
    np.testing.assert_array_equal(chips, [[0, 0, 3840, 2160]])


def test_tiny_image():
    boxes = np.array([[0, 0, 1, 1], [0, 0, 1, 1]], np.float32)
    chips = positive_chips(boxes, (1, 1), 3.0, (0, -1), 512, 32, seed=0)
    np.testing.assert_array_equal(chips, [[0, 0, 1, 1]])


def test_huge_image_with_few_boxes_is_fast():
    import time

    boxes = np.array([[0, 0, 10, 10], [29990, 19990, 30000, 20000], [15000, 9000, 15030, 9020]], np.float32)
    start = time.perf_counter()
    chips = positive_chips(boxes, (20000, 30000), 3.0, (0, 80), 512, 32, seed=1)
    assert time.perf_counter() - start < 5.0
    assert len(chips) == 3 and boxes_inside(boxes, chips).any(axis=1).all()
    assert_chip_bounds(chips, (20000, 30000), 3.0, 512)


def test_degenerate_boxes_are_dropped_or_clipped_with_a_counting_warning(caplog):
    boxes = np.array([
        [np.nan, 0, 10, 10],  # NaN
        [50, 50, 50, 60],  # zero width
        [70, 70, 60, 80],  # negative width
        [-500, -500, -400, -400],  # outside
        [-5, 10, 20, 30],  # partly outside: clipped, then covered
        [200, 200, 220, 230],  # fine
    ], np.float32)
    with caplog.at_level(logging.WARNING, logger="sniper_d2.chips"):
        chips = positive_chips(boxes, (300, 300), 1.0, (0, -1), 128, 16, seed=0)
    text = caplog.text
    assert "1 with NaN/inf" in text and "2 of zero or negative size" in text
    assert "1 entirely outside" in text and "1 clipped" in text
    assert boxes_inside(np.array([[0, 10, 20, 30], [200, 200, 220, 230]], np.float32), chips).any(1).all()
    assert_chip_bounds(chips, (300, 300), 1.0, 128)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="scale"):
        positive_chips(np.zeros((0, 4)), (10, 10), FIT_SCALE, (0, -1), 64, 8)
    with pytest.raises(ValueError, match="image_size"):
        positive_chips(np.zeros((0, 4)), (0, 10), 1.0, (0, -1), 64, 8)
    with pytest.raises(ValueError):
        resolve_scale(0.0, (10, 10), 64)


# --------------------------------------------------------------------------------------------
# Negative chips
# --------------------------------------------------------------------------------------------
def _cluster(rng, cx, cy, n, spread=30):
    xy = rng.uniform([cx - spread, cy - spread], [cx + spread, cy + spread], size=(n, 2))
    return np.concatenate([xy, xy + rng.uniform(5, 20, size=(n, 2))], 1).astype(np.float32)


def test_negative_chips_cover_dense_proposal_clusters_away_from_positives():
    rng = np.random.default_rng(0)
    positives = np.array([[0, 0, 256, 256]], np.float32)
    inside_pos = _cluster(rng, 120, 120, 40)
    dense = _cluster(rng, 700, 700, 30)
    sparse = _cluster(rng, 300, 800, 5)
    props = np.concatenate([inside_pos, dense, sparse])
    chips = negative_chips(props, (1000, 1000), 1.0, 256, 32, positives, min_proposals=10, seed=0)
    assert len(chips) == 1
    assert boxes_inside(dense, chips).all()
    assert not boxes_inside(sparse, chips).any()
    assert_chip_bounds(chips, (1000, 1000), 1.0, 256)


def test_proposals_mostly_on_an_object_are_not_clutter():
    objects = np.array([[100, 100, 400, 400]], np.float32)
    props = np.array([[150, 150, 250, 250],   # a fragment inside the object
                      [350, 350, 450, 450],   # a quarter on it
                      [380, 100, 480, 200],   # a fifth on it
                      [600, 600, 650, 650],   # far away
                      [100, 100, 400, 400]],  # the object itself
                     np.float32)
    np.testing.assert_array_equal(off_object_proposals(props, objects), [False, True, True, True, False])
    np.testing.assert_array_equal(off_object_proposals(props, objects, max_on_object=0.22), [False, False, True, True, False])
    assert off_object_proposals(props, np.zeros((0, 4))).all()
    assert off_object_proposals(np.zeros((0, 4)), objects).shape == (0,)


def test_negative_chips_ignore_proposals_outside_the_scale_valid_range():
    # A dense cluster of large proposals (a big object the weak detector fires on at a fine scale)
    # and a dense cluster of small ones (clutter). At a scale valid for (0, 64), only the small ones
    # are this scale's false positives.
    rng = np.random.default_rng(0)
    small = _cluster(rng, 700, 700, 30)
    big = np.tile(np.array([[150.0, 150.0, 330.0, 330.0]], np.float32), (30, 1)) + rng.normal(0, 2, (30, 4)).astype(np.float32)
    props = np.concatenate([small, big])
    everything = negative_chips(props, (1000, 1000), 1.0, 256, 32, np.zeros((0, 4)), min_proposals=10, seed=0)
    in_range = negative_chips(props, (1000, 1000), 1.0, 256, 32, np.zeros((0, 4)), min_proposals=10, seed=0,
                              valid_range=(0, 64))
    assert len(everything) == 2 and boxes_inside(big, everything).any()
    assert len(in_range) == 1 and boxes_inside(small, in_range).all() and not boxes_inside(big, in_range).any()


@SETTINGS
@given(st.integers(0, 10**6), st.integers(1, 30), st.one_of(st.none(), st.integers(0, 100)))
def test_every_negative_chip_holds_enough_proposals_outside_positives(data_seed, min_props, seed):
    rng = np.random.default_rng(data_seed)
    h, w = int(rng.integers(100, 3000)), int(rng.integers(100, 3000))
    n = int(rng.integers(0, 300))
    x, y = rng.uniform(0, w - 1, n), rng.uniform(0, h - 1, n)
    props = np.stack([x, y, np.minimum(x + rng.uniform(1, 80, n), w), np.minimum(y + rng.uniform(1, 80, n), h)], 1)
    props = props.astype(np.float32)
    positives = positive_chips(props[: n // 3], (h, w), 1.5, (0, -1), 256, 32, seed=seed)
    chips = negative_chips(props, (h, w), 1.5, 256, 32, positives, min_props, seed=seed)
    assert_chip_bounds(chips, (h, w), 1.5, 256)
    outside = props[~boxes_inside(props, positives).any(axis=1)] if len(positives) else props
    if len(chips) == 0:
        return
    inside = boxes_inside(outside, chips)
    # Greedy order: chip k counts the proposals not in chips 0..k-1.
    first = np.where(inside.any(axis=1), inside.argmax(axis=1), -1)
    counts = np.bincount(first[first >= 0], minlength=len(chips))
    assert (counts >= min_props).all()
    assert (np.diff(counts) <= 0).all()


@SETTINGS
@given(st.lists(scenes(max_side=3000, max_boxes=30), min_size=1, max_size=4), st.integers(0, 1000))
def test_a_batch_gives_each_problem_the_chips_of_its_own_call(problems, seed):
    """Covers planned together (as the planner batches images, scales and epochs) do not affect
    each other: each problem gets exactly what positive_chips gives it alone."""
    chip_size, stride = problems[0][4], problems[0][5]
    boxes, owner, sizes, scales, seeds, alone = [], [], [], [], [], []
    for q, (b, size, scale, valid_range, _, _) in enumerate(problems):
        s = None if (seed + q) % 3 == 0 else [seed, q]
        alone.append(positive_chips(b, size, scale, valid_range, chip_size, stride, seed=s))
        clipped, keep, _ = sanitize_boxes(b, size)
        b = clipped[keep][in_valid_range(clipped[keep], valid_range)]
        boxes.append(b)
        owner.append(np.full(len(b), q))
        sizes.append(size)
        scales.append(scale)
        seeds.append(s)
    problem, chips = batch_positive_chips(np.concatenate(boxes), np.concatenate(owner), sizes, scales,
                                          chip_size, stride, seeds)
    assert (np.diff(problem) >= 0).all()
    for q, want in enumerate(alone):
        np.testing.assert_array_equal(chips[problem == q], want)


@pytest.mark.parametrize("seed", [0, 1])
def test_dense_scene_many_picks_per_step_matches_the_straightforward_greedy(seed):
    """Hundreds of boxes in clusters and alone: the cover takes many picks per step (one per block
    that beats its neighbours), and still equals the textbook greedy, chip for chip, in order."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 1500, (12, 2))
    xy = np.concatenate([centres[rng.integers(0, 12, 250)] + rng.normal(0, 40, (250, 2)),
                         rng.uniform(0, 1500, (150, 2))])
    side = np.exp(rng.uniform(np.log(3), np.log(60), (len(xy), 2)))
    boxes = np.clip(np.concatenate([xy, xy + side], 1), 0, 1500).astype(np.float32)
    boxes = boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]
    ours = positive_chips(boxes, (1500, 1500), 1.0, (0, -1), 128, 16)
    np.testing.assert_array_equal(ours, reference_positive_chips(boxes, (1500, 1500), 1.0, (0, -1), 128, 16))
    assert boxes_inside(boxes, ours).any(axis=1).all()
