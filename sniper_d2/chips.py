"""Chip placement: which fixed-size crops of a pyramid level cover the objects. Numpy only.

Conventions (see docs/ARCHITECTURE.md): boxes and chips are ``(N, 4) float32 XYXY in
original-image pixels``; a *scale* is a resize factor; ``chip_size`` and ``stride`` are in pixels of
the scaled image; object size is ``sqrt(w * h)`` in original pixels.

Candidate chips lie on a grid: along each axis, chip starts at ``offset + k * stride / scale``
(``offset`` drawn from the seed), plus the two border positions ``0`` and ``length - chip``, so
chips near the border are shifted inward and every chip keeps its full size. A chip is
``chip_size / scale`` original pixels wide and high, or the whole image side where that is smaller.

Counting without a (chips x boxes) matrix: the grid positions whose chip contains a box form a
rectangle of grid cells (x start between ``box.x1 - chip`` and ``box.x0``, same for y). Adding +1 on
each such rectangle through a 2D difference array and two cumulative sums gives the number of boxes
inside every candidate chip in O(boxes + cells). The greedy cover then repeatedly takes the cell with
the largest count and subtracts the rectangles of the boxes it newly covered (inside a small window
around the pick), so each step costs one arg-max over the grid plus work proportional to the boxes
it covered. A box that fits a chip but has no grid position in its interval (a box almost as large as
a chip) gets a chip placed inside its own interval at the end, so the coverage promise holds for
every valid box that fits.
"""

import logging
import math

import numpy as np

from .coco import sanitize_boxes
from .config import FIT_SCALE, ValidRange, is_fit

__all__ = ["resolve_scale", "chip_extent", "positive_chips", "negative_chips", "boxes_inside",
           "fraction_inside", "off_object_proposals"]

logger = logging.getLogger(__name__)

# Chip sides within this relative tolerance of the image side are taken as the whole side (so that
# FIT_SCALE's chip_size / scale, which may differ from the long side by a rounding error, is exact).
_WHOLE_SIDE_RTOL = 1e-6


def resolve_scale(scale_entry, image_size, chip_size):
    """The resize factor of a ``cfg.SNIPER.SCALES`` entry for one image.

    Args:
        scale_entry (float): a resize factor (> 0), or ``FIT_SCALE`` (-1): resize the image so that
            its long side equals ``chip_size``.
        image_size (tuple[int, int]): (height, width) of the original image, pixels.
        chip_size (int): chip (or tile) side in scaled pixels.

    Returns:
        float: the factor applied to the original image.
    """
    scale_entry = float(scale_entry)
    if is_fit(scale_entry):
        return float(chip_size) / float(max(image_size))
    if not (scale_entry > 0 and math.isfinite(scale_entry)):
        raise ValueError(f"scale {scale_entry} is neither a positive resize factor nor FIT_SCALE ({FIT_SCALE})")
    return scale_entry


def chip_extent(image_size, scale, chip_size):
    """Chip (height, width) in original pixels: ``chip_size / scale``, capped at the image size."""
    h, w = float(image_size[0]), float(image_size[1])
    side = float(chip_size) / float(scale)
    ch = h if side >= h * (1 - _WHOLE_SIDE_RTOL) else side
    cw = w if side >= w * (1 - _WHOLE_SIDE_RTOL) else side
    return ch, cw


def boxes_inside(boxes, chips):
    """(N, K) bool: box n lies entirely inside chip k (both XYXY, same frame)."""
    b = np.asarray(boxes, np.float32).reshape(-1, 1, 4)
    c = np.asarray(chips, np.float32).reshape(1, -1, 4)
    return ((b[..., 0] >= c[..., 0]) & (b[..., 1] >= c[..., 1])
            & (b[..., 2] <= c[..., 2]) & (b[..., 3] <= c[..., 3]))


def fraction_inside(boxes, regions):
    """(N, M) float64: the fraction of box n's area that lies inside region m (both XYXY, same frame).

    Degenerate boxes (zero area) count as not inside.
    """
    b = np.asarray(boxes, np.float64).reshape(-1, 1, 4)
    r = np.asarray(regions, np.float64).reshape(1, -1, 4)
    wh = np.clip(np.minimum(b[..., 2:], r[..., 2:]) - np.maximum(b[..., :2], r[..., :2]), 0, None)
    area = np.maximum((b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1]), 1e-12)
    return wh[..., 0] * wh[..., 1] / area


def off_object_proposals(proposals, objects, max_on_object=0.5):
    """Which proposals are background mistakes: less than ``max_on_object`` of their area lies
    inside any one annotated object.

    A weak detector also proposes parts of real objects (a fragment of a large object at a fine
    scale, where that object is invalid and ignored); those are not clutter, and negative chips
    placed on them would only show the object again as an ignore region.

    Args:
        proposals: (P, 4) float XYXY, original pixels. objects: (N, 4) float XYXY, original pixels.
        max_on_object (float): the largest fraction of a proposal's area that may lie inside one object.

    Returns:
        (P,) bool.
    """
    return (fraction_inside(proposals, objects) < max_on_object).all(axis=1)


# ------------------------------------------------------------------------------------------------
# Grid
# ------------------------------------------------------------------------------------------------
def _axis_positions(length, chip_len, step, offset):
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


def _grid_ranges(lo_coord, hi_coord, starts, ends):
    """Index range [first, last] of positions whose chip contains [lo_coord, hi_coord] (one axis)."""
    first = np.searchsorted(ends, hi_coord, side="left")  # first chip with end >= box end
    last = np.searchsorted(starts, lo_coord, side="right") - 1  # last chip with start <= box start
    return first.astype(np.int64), last.astype(np.int64)


class _Grid:
    """The candidate chips of one image at one scale (seeded offset)."""

    def __init__(self, image_size, scale, chip_size, stride, rng):
        h, w = float(image_size[0]), float(image_size[1])
        self.chip_h, self.chip_w = chip_extent(image_size, scale, chip_size)
        step = float(stride) / float(scale)
        off_x, off_y = (0.0, 0.0) if rng is None else rng.uniform(0.0, step, size=2)
        self.x0, self.x1 = _axis_positions(w, self.chip_w, step, off_x)
        self.y0, self.y1 = _axis_positions(h, self.chip_h, step, off_y)
        self.height, self.width = h, w
        self.rng = rng  # continues after the offsets: breaks ties in the greedy cover

    def fits(self, boxes):
        """(N,) bool: the box is not larger than a chip along either axis."""
        b = boxes.astype(np.float64)
        return ((b[:, 2] - b[:, 0]) <= self.chip_w) & ((b[:, 3] - b[:, 1]) <= self.chip_h)

    def ranges(self, boxes):
        """(xlo, xhi, ylo, yhi) int64 grid index ranges of each box (empty where lo > hi)."""
        xlo, xhi = _grid_ranges(boxes[:, 0], boxes[:, 2], self.x0, self.x1)
        ylo, yhi = _grid_ranges(boxes[:, 1], boxes[:, 3], self.y0, self.y1)
        return xlo, xhi, ylo, yhi

    def chips(self, iy, ix):
        iy, ix = np.asarray(iy, np.int64), np.asarray(ix, np.int64)
        return np.stack([self.x0[ix], self.y0[iy], self.x1[ix], self.y1[iy]], axis=1).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# Greedy cover on the grid
# ------------------------------------------------------------------------------------------------
def _rectangle_counts(xlo, xhi, ylo, yhi, ny, nx, y_base=0, x_base=0):
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


def _greedy_cover(xlo, xhi, ylo, yhi, ny, nx, rng, min_count):
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
    score = _rectangle_counts(xlo, xhi, ylo, yhi, ny, nx)
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
        score[wy0:wy1, wx0:wx1] -= _rectangle_counts(xlo[new], xhi[new], ylo[new], yhi[new],
                                                     wy1 - wy0, wx1 - wx0, wy0, wx0)
    return np.asarray(picks_y, np.int64), np.asarray(picks_x, np.int64), covered


def _fallback_chips(boxes, grid):
    """Chips for boxes that fit but have no grid position: each placed inside its own interval.

    One pick per still-uncovered box (in order); every such box inside a new chip is covered too.
    """
    chips = []
    pending = np.ones(len(boxes), bool)
    b64 = boxes.astype(np.float64)
    while pending.any():
        i = int(np.argmax(pending))
        x0 = _inner_start(b64[i, 0], b64[i, 2], grid.chip_w, grid.width)
        y0 = _inner_start(b64[i, 1], b64[i, 3], grid.chip_h, grid.height)
        chip = np.array([
            min(np.float32(x0), boxes[i, 0]),
            min(np.float32(y0), boxes[i, 1]),
            max(min(np.float32(x0 + grid.chip_w), np.float32(grid.width)), boxes[i, 2]),
            max(min(np.float32(y0 + grid.chip_h), np.float32(grid.height)), boxes[i, 3]),
        ], np.float32)
        chips.append(chip)
        pending &= ~boxes_inside(boxes, chip[None])[:, 0]
    return np.stack(chips) if chips else np.zeros((0, 4), np.float32)


def _inner_start(b0, b1, chip_len, length):
    """Middle of the chip starts that keep [b0, b1] inside the chip and the chip inside the image."""
    lo = max(b1 - chip_len, 0.0)
    hi = min(b0, length - chip_len)
    return 0.5 * (lo + max(hi, lo))


# ------------------------------------------------------------------------------------------------
# Public API
# ------------------------------------------------------------------------------------------------
def _check_args(image_size, scale, chip_size, stride):
    h, w = image_size
    if not (h > 0 and w > 0):
        raise ValueError(f"image_size must be positive (height, width), got {tuple(image_size)}")
    if not (float(scale) > 0 and math.isfinite(float(scale))):
        raise ValueError(f"scale must be a positive resize factor, got {scale} (resolve FIT_SCALE "
                         "with resolve_scale first)")
    if not (chip_size > 0 and stride > 0):
        raise ValueError(f"chip_size and stride must be positive, got {chip_size}, {stride}")


def _clean_boxes(boxes, image_size, what):
    """Clip to the image; drop NaN/inf, empty or outside boxes, with one warning counting them."""
    clipped, keep, counts = sanitize_boxes(boxes, image_size)
    if counts:
        detail = ", ".join(f"{n} {why}" for why, n in sorted(counts.items()))
        logger.warning(f"{what}: dropped or clipped boxes of a {image_size[1]}x{image_size[0]} image: {detail}")
    return clipped[keep]


def _in_valid_range(boxes, valid_range):
    """The rows of ``boxes`` (N, 4) XYXY whose sqrt(w*h) lies in [lo, hi) (see :class:`ValidRange`)."""
    size = np.sqrt((boxes[:, 2] - boxes[:, 0]).astype(np.float64) * (boxes[:, 3] - boxes[:, 1]))
    return boxes[ValidRange.parse(valid_range).train_mask(size)]


def _rng(seed):
    return None if seed is None else np.random.default_rng(seed)


def positive_chips(boxes, image_size, scale, valid_range, chip_size, stride, seed=None):
    """Chips covering every valid object of one image at one pyramid scale (greedy cover).

    Args:
        boxes: (N, 4) float XYXY in original-image pixels. Boxes partly outside the image are
            clipped; NaN/inf, empty and outside boxes are dropped (one warning counts them).
        image_size (tuple[int, int]): (height, width) of the original image.
        scale (float): resize factor of this pyramid level (resolved, > 0; see :func:`resolve_scale`).
        valid_range (ValidRange or (lo, hi)): on sqrt(w*h) in original pixels; a box is valid
            when lo <= size < hi. A pair's hi may be inf, None or -1 (no upper bound).
        chip_size (int): chip side in scaled pixels.
        stride (int): grid step between candidate chip positions, in scaled pixels.
        seed: None (zero grid offset, ties to the first cell in row-major order: fully
            deterministic) or anything ``np.random.default_rng`` accepts (an int or a sequence of
            ints): draws the grid offset and breaks ties; the same seed gives the same chips.

    Returns:
        (K, 4) float32 XYXY chips in original-image pixels, inside the image, each
        ``chip_size / scale`` wide and high (or the whole image side where smaller). Every valid box
        whose width and height are at most the chip's lies entirely inside at least one chip.
        Boxes too large for a chip at this scale are not covered (they belong to a coarser scale).
    """
    _check_args(image_size, scale, chip_size, stride)
    boxes = _in_valid_range(_clean_boxes(boxes, image_size, "positive_chips"), valid_range)
    if len(boxes) == 0:
        return np.zeros((0, 4), np.float32)
    grid = _Grid(image_size, scale, chip_size, stride, _rng(seed))
    chips, off_grid = _cover_on_grid(grid, boxes, min_count=1)
    if len(off_grid):
        # A chip picked on the grid may already hold some of them.
        off_grid = off_grid[~boxes_inside(off_grid, chips).any(axis=1)]
        chips = np.concatenate([chips, _fallback_chips(off_grid, grid)])
    return chips


def negative_chips(proposals, image_size, scale, chip_size, stride, positive_chips, min_proposals,
                   seed=None, valid_range=(0.0, None)):
    """Chips over a weak detector's false positives, away from the positive chips.

    Proposals whose size is outside this scale's ``valid_range`` are dropped (this scale is not
    responsible for them: a proposal on a large object at a fine scale marks an object that is
    ignored there, not background to learn from), and so are proposals lying entirely inside a
    positive chip; the others (those that fit a chip) are greedily covered like
    :func:`positive_chips`, and a chip is kept only while it holds at least ``min_proposals`` of the
    proposals not yet covered by an earlier negative chip.

    Args:
        proposals: (P, 4) float XYXY in original-image pixels (degenerate ones dropped, counted).
        image_size, scale, chip_size, stride, seed: as in :func:`positive_chips`.
        positive_chips: (K, 4) float XYXY chips of this image and scale, original pixels.
        min_proposals (int): fewest proposals a negative chip must hold (values below 1 count as 1).
        valid_range (ValidRange or (lo, hi)): on sqrt(w*h) in original pixels, as in
            :func:`positive_chips`; the default keeps every size.

    Returns:
        (J, 4) float32 XYXY chips in original-image pixels, in greedy order (most proposals first).
    """
    _check_args(image_size, scale, chip_size, stride)
    props = _in_valid_range(_clean_boxes(proposals, image_size, "negative_chips"), valid_range)
    pos = np.asarray(positive_chips, np.float32).reshape(-1, 4)
    if len(pos) and len(props):
        props = props[~boxes_inside(props, pos).any(axis=1)]
    if len(props) < max(int(min_proposals), 1):
        return np.zeros((0, 4), np.float32)
    grid = _Grid(image_size, scale, chip_size, stride, _rng(seed))
    chips, _ = _cover_on_grid(grid, props, min_count=min_proposals)
    return chips


def _cover_on_grid(grid, boxes, min_count):
    """Greedily cover, with chips of ``grid``, the boxes that fit a chip.

    Args:
        grid (_Grid): the chip grid of one image and scale.
        boxes: (N, 4) float32 XYXY in original-image pixels.
        min_count (int): fewest not-yet-covered boxes a chip must hold to be picked.

    Returns:
        chips: (K, 4) float32 XYXY in original-image pixels, in greedy order.
        off_grid: (M, 4) the boxes that fit a chip but lie inside no grid chip (the stride skips
            every start that would hold them); the caller decides whether they need chips of
            their own (:func:`_fallback_chips`).
    """
    boxes = boxes[grid.fits(boxes)]
    xlo, xhi, ylo, yhi = grid.ranges(boxes)
    on_grid = (xlo <= xhi) & (ylo <= yhi)
    iy, ix, _ = _greedy_cover(xlo[on_grid], xhi[on_grid], ylo[on_grid], yhi[on_grid],
                              len(grid.y0), len(grid.x0), grid.rng, min_count)
    return grid.chips(iy, ix), boxes[~on_grid]
