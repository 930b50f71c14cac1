"""Chip placement: which fixed-size crops of a pyramid level cover the objects. Numpy only.

Conventions (see docs/ARCHITECTURE.md): boxes and chips are ``(N, 4) float32 XYXY in
original-image pixels``; a *scale* is a resize factor; ``chip_size`` and ``stride`` are in pixels of
the scaled image; object size is ``sqrt(w * h)`` in original pixels.

Candidate chips lie on a grid: along each axis, chip starts at ``offset + k * stride / scale``
(``offset`` drawn from the seed), plus the two border positions ``0`` and ``length - chip``, so
chips near the border are shifted inward and every chip keeps its full size. A chip is
``chip_size / scale`` original pixels wide and high, or the whole image side where that is smaller.

Counting without a (chips x boxes) matrix: the grid positions whose chip contains a box form a
rectangle of grid cells (x start between ``box.x1 - chip`` and ``box.x0``, same for y). A cell
holding the most boxes can always be moved, keeping its boxes, to a row and a column where some box's
rectangle starts, so the greedy cover counts on that compressed grid (at most boxes x boxes cells,
never more than the grid): +1 on each box's rectangle through a difference array and two cumulative
sums gives every candidate's count. The greedy cover then repeatedly takes the cell with the largest
count and subtracts the rectangles of the boxes it newly covered. Without a seed, ties go to the
first cell in row-major order (the textbook greedy's choice, checked against it in the tests); with
a seed, to a random priority, and the chip is then placed uniformly among the grid positions that
hold the same boxes. A box that fits a chip but has no grid position in its interval (a box almost
as large as a chip) gets a chip placed inside its own interval at the end, so the coverage promise
holds for every valid box that fits.

Speed: numpy's cost per call dominates small images, so many covers (images x scales x epochs) run
together, in lockstep, in one call (:func:`batch_positive_chips`, :func:`batch_negative_chips`):
every numpy operation of a greedy step serves all of them, and a cover's chips do not depend on the
covers it runs with. Random numbers (grid offsets, priorities, placements) are a hash of (seed,
stream, counter), not a generator: no per-cover set-up, and independent of the batch.
"""

import logging
import math

import numpy as np

from .coco import sanitize_boxes
from .config_types import FIT_SCALE, ValidRange, is_fit

__all__ = ["resolve_scale", "chip_extent", "positive_chips", "negative_chips", "batch_positive_chips",
           "batch_negative_chips", "in_valid_range", "boxes_inside",
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
        image_size (tuple[int, int]): (height, width) of the original image, pixels (or two
            arrays of heights and widths).
        chip_size (int): chip (or tile) side in scaled pixels.

    Returns:
        float: the factor applied to the original image (an array for arrays of sizes and
        ``FIT_SCALE``).
    """
    scale_entry = float(scale_entry)
    if is_fit(scale_entry):
        long_side = np.maximum(np.asarray(image_size[0], np.float64), np.asarray(image_size[1], np.float64))
        scale = float(chip_size) / long_side
        return float(scale) if scale.ndim == 0 else scale
    if not (scale_entry > 0 and math.isfinite(scale_entry)):
        raise ValueError(f"scale {scale_entry} is neither a positive resize factor nor FIT_SCALE ({FIT_SCALE})")
    return scale_entry


def chip_extent(image_size, scale, chip_size):
    """Chip (height, width) in original pixels: ``chip_size / scale``, capped at the image size.

    ``image_size`` entries and ``scale`` may also be arrays (broadcast): the result is then two
    float64 arrays instead of two floats.
    """
    h, w = np.asarray(image_size[0], np.float64), np.asarray(image_size[1], np.float64)
    side = float(chip_size) / np.asarray(scale, np.float64)
    ch = np.where(side >= h * (1 - _WHOLE_SIDE_RTOL), h, side)
    cw = np.where(side >= w * (1 - _WHOLE_SIDE_RTOL), w, side)
    return (float(ch), float(cw)) if ch.ndim == 0 else (ch, cw)


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
# Random numbers: a fixed function of (seed, stream, counter)
# ------------------------------------------------------------------------------------------------
_U64 = 2 ** 64
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
# Streams of random numbers drawn per seed: grid offsets, tie-break priorities, placements.
_OFFSET, _PRIORITY, _PLACE = (np.uint64((k + 1) * 0x9E3779B97F4A7C15 % _U64) for k in range(3))


def _mix(x):
    """splitmix64's finalizer, elementwise on a uint64 array (wrapping arithmetic)."""
    x = (x ^ (x >> np.uint64(30))) * _MIX1
    x = (x ^ (x >> np.uint64(27))) * _MIX2
    return x ^ (x >> np.uint64(31))


def _seed_keys(seeds):
    """(keys (E,) uint64, seeded (E,) bool) of E seeds.

    ``seeds`` is a sequence of seeds, each None or an int or a sequence of ints, or an (E, L) int
    array (E seeds of L ints). A key is a hash of the seed's ints and their number.
    """
    if isinstance(seeds, np.ndarray) and seeds.ndim == 2 and seeds.dtype.kind in "iu":
        values = seeds.astype(np.int64)
        lengths = np.full(len(values), values.shape[1], np.int64)
        seeded = np.ones(len(values), bool)
    else:
        rows = [np.zeros(0, np.int64) if s is None else np.asarray(s, np.int64).reshape(-1) for s in seeds]
        seeded = np.array([s is not None for s in seeds], bool)
        lengths = np.array([len(r) for r in rows], np.int64)
        values = np.zeros((len(rows), int(lengths.max(initial=0))), np.int64)
        for i, r in enumerate(rows):
            values[i, :len(r)] = r
    keys = _mix(lengths.astype(np.uint64) + _GOLDEN)
    for j in range(values.shape[1]):
        keys = np.where(j < lengths, _mix((keys ^ values[:, j].view(np.uint64)) + _GOLDEN), keys)
    return keys, seeded


def _uniforms(keys, stream, counters):
    """Floats in [0, 1), a fixed function of (key, stream, counter); keys and counters broadcast."""
    x = _mix(_mix(keys + stream) ^ (np.asarray(counters).astype(np.uint64) * _GOLDEN))
    return (x >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


# ------------------------------------------------------------------------------------------------
# Grids
# ------------------------------------------------------------------------------------------------
def _axis_grids(length, chip_len, step, offsets):
    """Candidate chip starts and ends along one axis, one row per problem.

    Row p holds the starts ``offsets[p] + k * step[p]`` inside ``[0, length[p] - chip_len[p]]``
    plus both border positions, ascending and distinct, then +inf padding. Ends are
    ``start + chip_len`` computed once in float32 and capped at ``length``, so containment tests
    against float32 boxes are exact for the chips as returned.

    Args:
        length, chip_len, step, offsets: (P,) float64, original pixels.

    Returns:
        starts, ends: (P, K) float32.
    """
    room = length - chip_len
    spare = room > 0
    k = np.arange(int(math.ceil((room[spare] / step[spare]).max(initial=0.0))) + 1, dtype=np.float64)
    grid = offsets[:, None] + k * step[:, None]
    grid[~spare] = np.inf
    border = np.where(spare, room, np.inf)[:, None]  # no grid and no second border where room <= 0
    starts = np.concatenate([np.zeros_like(border), np.where(grid < border, grid, np.inf), border],
                            axis=1).astype(np.float32)
    starts.sort(axis=1)
    repeated = np.zeros(starts.shape, bool)
    repeated[:, 1:] = starts[:, 1:] == starts[:, :-1]
    starts[repeated] = np.inf
    starts.sort(axis=1)
    starts = np.ascontiguousarray(starts[:, :int(np.isfinite(starts).sum(axis=1).max(initial=1))])
    ends = np.minimum((starts.astype(np.float64) + chip_len[:, None]).astype(np.float32),
                      length[:, None].astype(np.float32))
    ends[np.isinf(starts)] = np.inf
    return starts, ends


def _rowwise_searchsorted(rows, values, side):
    """``np.searchsorted(rows[p], values[p], side)`` for every row p, in one call.

    Args:
        rows: (P, K) float32, ascending per row, >= +0 (+inf allowed). values: (P, N) float32,
            finite and >= 0.

    Non-negative float32 numbers compare like the int32 of their bits, so the rows are laid out
    one after another as exact int64 keys ``p * 2**32 + bits``.
    """
    num, width = rows.shape
    base = np.arange(num, dtype=np.int64)[:, None] << 32
    keys = rows.view(np.int32).astype(np.int64) + base
    query = (values + np.float32(0.0)).view(np.int32).astype(np.int64) + base  # + 0: -0.0 becomes +0.0
    return np.searchsorted(keys.ravel(), query.ravel(), side).reshape(values.shape) - (base >> 32) * width


class _Grids:
    """The candidate chips of P problems, each one image at one scale with one seed."""

    def __init__(self, image_sizes, scales, chip_size, stride, keys, seeded):
        self.height = image_sizes[:, 0].astype(np.float64)
        self.width = image_sizes[:, 1].astype(np.float64)
        self.chip_h, self.chip_w = chip_extent((self.height, self.width), scales, chip_size)
        step = float(stride) / scales
        offsets = (step * seeded)[:, None] * _uniforms(keys[:, None], _OFFSET, np.arange(2))
        self.x0, self.x1 = _axis_grids(self.width, self.chip_w, step, offsets[:, 0])
        self.y0, self.y1 = _axis_grids(self.height, self.chip_h, step, offsets[:, 1])
        self.keys, self.seeded = keys, seeded

    def __len__(self):
        return len(self.keys)

    def fits(self, boxes):
        """(P, N) bool: box n of problem p is not larger than the problem's chip along either axis."""
        b = boxes.astype(np.float64)
        return (((b[..., 2] - b[..., 0]) <= self.chip_w[:, None])
                & ((b[..., 3] - b[..., 1]) <= self.chip_h[:, None]))

    def ranges(self, boxes):
        """(xlo, xhi, ylo, yhi): (P, N) int64 index ranges of the chips of problem p holding its
        box n (empty where lo > hi)."""
        xlo = _rowwise_searchsorted(self.x1, boxes[..., 2], "left")  # first chip whose end >= box end
        xhi = _rowwise_searchsorted(self.x0, boxes[..., 0], "right") - 1  # last chip whose start <= box start
        ylo = _rowwise_searchsorted(self.y1, boxes[..., 3], "left")
        yhi = _rowwise_searchsorted(self.y0, boxes[..., 1], "right") - 1
        return xlo, xhi, ylo, yhi

    def chips(self, p, iy, ix):
        """(K, 4) float32 chips of problem p[k] at cell (iy[k], ix[k])."""
        return np.stack([self.x0[p, ix], self.y0[p, iy], self.x1[p, ix], self.y1[p, iy]], axis=1)


# ------------------------------------------------------------------------------------------------
# Greedy cover, all problems at once
# ------------------------------------------------------------------------------------------------
def _compress(lo, hi, live, size):
    """The candidate positions of one axis: per row, the distinct ``lo`` of the live boxes.

    A cell holding the most boxes can always be moved, without losing a box, to the position
    ``lo`` of one of the boxes it holds, along both axes (the first such cell in row-major order is
    one). So the greedy cover only needs the cells on these positions.

    Args:
        lo, hi: (P, N) int64 index ranges of the boxes on one axis. live: (P, N) bool.
        size (int): number of grid positions (padding value).

    Returns:
        pos: (P, U) int64 positions, ascending per row, padded with ``size``.
        clo, chi: (P, N) int64 the index range of each live box in ``pos`` (meaningless elsewhere).
    """
    num = len(lo)
    srt = np.sort(np.where(live, lo, size), axis=1)
    repeated = np.zeros(srt.shape, bool)
    repeated[:, 1:] = srt[:, 1:] == srt[:, :-1]
    srt[repeated] = size
    srt.sort(axis=1)
    width = max(1, int((srt < size).sum(axis=1).max(initial=0)))
    pos = srt[:, :width]
    row = np.arange(num, dtype=np.int64)[:, None]
    keys = (pos + row * (size + 1)).ravel()
    clo = np.searchsorted(keys, (lo + row * (size + 1)).ravel(), "left").reshape(lo.shape) - row * width
    chi = np.searchsorted(keys, (hi + row * (size + 1)).ravel(), "right").reshape(hi.shape) - 1 - row * width
    return pos, clo, chi


def _rectangle_counts(p, y0, y1, x0, x1, shape):
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


def _subtract_rectangles(score, p, y0, y1, x0, x1):
    """``score[p[k], y0[k]:y1[k] + 1, x0[k]:x1[k] + 1] -= 1`` for every k, in place (no Python loop).

    Cell by cell when the rectangles are small, else through a difference array of the whole
    grid; both are exact (integers subtracted from float32 counts plus fractions below 0.5).
    """
    _, ny, nx = score.shape
    w = x1 - x0 + 1
    area = (y1 - y0 + 1) * w
    if int(area.sum()) * 4 > score.size:
        score -= _rectangle_counts(p, y0, y1, x0, x1, score.shape)
        return
    k = np.repeat(np.arange(len(p)), area)
    local = np.arange(int(area.sum())) - np.repeat(np.cumsum(area) - area, area)
    r, c = np.divmod(local, w[k])
    flat = score.reshape(-1)
    assert np.shares_memory(flat, score), "score must be C-contiguous"
    np.subtract.at(flat, (p[k] * ny + y0[k] + r) * nx + x0[k] + c, np.float32(1.0))


def _greedy_cover(grids, ranges, live, min_count):
    """Greedy set cover of the live boxes by grid cells, every problem (row) at once, in lockstep.

    Each pick of problem p takes a cell covered by the most of its not-yet-covered boxes; it stops
    when the best cell covers fewer than ``min_count[p]`` (>= 1). Without a seed, ties go to the
    first cell in row-major order. With a seed, ties between cells covering different boxes go to
    the cell of highest random priority (the sum of a random number drawn per grid row and one per
    grid column), and the pick is then placed uniformly at random among the cells that cover the
    same boxes (so objects do not always sit at a chip's border). A problem's picks do not depend
    on the other problems.

    Counting works on a compressed grid (see :func:`_compress`): rows and columns are the box
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
    ux, cxlo, cxhi = _compress(xlo, xhi, live, grids.x0.shape[1])
    uy, cylo, cyhi = _compress(ylo, yhi, live, grids.y0.shape[1])
    ny, nx = uy.shape[1], ux.shape[1]
    p, n = np.nonzero(live)
    # One column per (problem, box) still to cover: row of `score`, compressed ranges, column of `real`.
    # (A box holds cell (by, bx) when 0 <= by - cylo <= cyhi - cylo: one unsigned comparison per axis.)
    todo = np.stack([p, cylo[p, n], cyhi[p, n] - cylo[p, n], cxlo[p, n], cxhi[p, n] - cxlo[p, n],
                     np.arange(len(p))]).astype(np.int32)
    real = np.stack([ylo[p, n], xlo[p, n], yhi[p, n], xhi[p, n]]).astype(np.int32)  # real index ranges
    score = _rectangle_counts(p, cylo[p, n], cyhi[p, n], cxlo[p, n], cxhi[p, n], (num, ny, nx))
    seeded = grids.seeded
    if seeded.any():
        # Tie-break priority of a cell: a random number per grid row plus one per grid column (each
        # in [0, 0.25), a function of the real position, whatever the padding): cheap to draw.
        keys = grids.keys[:, None]
        row_prio = (0.25 * seeded)[:, None] * _uniforms(keys, _PRIORITY, uy << 1)
        col_prio = (0.25 * seeded)[:, None] * _uniforms(keys, _PRIORITY, (ux << 1) + 1)
        score += (row_prio[:, :, None] + col_prio[:, None, :]).astype(np.float32)
        place = seeded[:, None, None] * _uniforms(grids.keys[:, None, None], _PLACE,
                                                  np.arange(2 * live.shape[1]).reshape(1, -1, 2))
    if num == 1:
        need = max(int(np.asarray(min_count).reshape(-1)[0]), 1)
        iy, ix = _greedy_cover_one(score, todo, real, need, place[0] if seeded.any() else None)
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
        _subtract_rectangles(score, done[0], done[1], done[1] + done[2], done[3], done[3] + done[4])
        step += 1
    if not picks:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    picks = np.concatenate(picks, axis=1).astype(np.int64)
    picks = picks[:, np.argsort(picks[0], kind="stable")]
    return picks[0], picks[1], picks[2]


def _greedy_cover_one(score, todo, real, need, place):
    """The loop of :func:`_greedy_cover` for a single cover, with scalar steps (the same picks;
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
            _subtract_rectangles(score, done[0], done[1], done[1] + done[2], done[3], done[3] + done[4])
    picks = np.asarray(picks, np.int64).reshape(-1, 2)
    return picks[:, 0], picks[:, 1]


def _pad(group, values, num):
    """Rows ``values`` (M, ...) grouped by ``group`` (M,) in [0, num) -> (num, W, ...) padded with
    zeros, and the (num, W) bool mask of real entries (order within a group kept)."""
    order = np.argsort(group, kind="stable")
    g = group[order]
    counts = np.bincount(g, minlength=num)
    rank = np.arange(len(g)) - (np.cumsum(counts) - counts)[g]
    width = max(1, int(counts.max(initial=0)))
    out = np.zeros((num, width) + values.shape[1:], values.dtype)
    mask = np.zeros((num, width), bool)
    out[g, rank] = values[order]
    mask[g, rank] = True
    return out, mask


def _fallback_chips(boxes, chip_w, chip_h, width, height):
    """Chips for boxes that fit but have no grid position: each placed inside its own interval.

    One pick per still-uncovered box (in order); every such box inside a new chip is covered too.
    """
    chips = []
    pending = np.ones(len(boxes), bool)
    b64 = boxes.astype(np.float64)
    while pending.any():
        i = int(np.argmax(pending))
        x0 = _inner_start(b64[i, 0], b64[i, 2], chip_w, width)
        y0 = _inner_start(b64[i, 1], b64[i, 3], chip_h, height)
        chip = np.array([
            min(np.float32(x0), boxes[i, 0]),
            min(np.float32(y0), boxes[i, 1]),
            max(min(np.float32(x0 + chip_w), np.float32(width)), boxes[i, 2]),
            max(min(np.float32(y0 + chip_h), np.float32(height)), boxes[i, 3]),
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


def in_valid_range(boxes, valid_range):
    """(N,) bool: the box's sqrt(w*h) is valid for training at a scale of ``valid_range``
    (:class:`sniper_d2.config.ValidRange` or a config pair; ``lo <= size < hi``); boxes (N, 4) XYXY."""
    size = np.sqrt((boxes[:, 2] - boxes[:, 0]).astype(np.float64) * (boxes[:, 3] - boxes[:, 1]))
    return ValidRange.parse(valid_range).train_mask(size)


def _in_valid_range(boxes, valid_range):
    """The rows of ``boxes`` (N, 4) XYXY that are :func:`in_valid_range`."""
    return boxes[in_valid_range(boxes, valid_range)]


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
            deterministic) or an int or a sequence of ints: draws the grid offset, breaks ties and
            places each chip among the positions holding the same boxes; the same seed gives the
            same chips.

    Returns:
        (K, 4) float32 XYXY chips in original-image pixels, inside the image, each
        ``chip_size / scale`` wide and high (or the whole image side where smaller). Every valid box
        whose width and height are at most the chip's lies entirely inside at least one chip.
        Boxes too large for a chip at this scale are not covered (they belong to a coarser scale).
    """
    _check_args(image_size, scale, chip_size, stride)
    boxes = _in_valid_range(_clean_boxes(boxes, image_size, "positive_chips"), valid_range)
    _, chips = batch_positive_chips(boxes, np.zeros(len(boxes), np.int64), [image_size], [scale], chip_size,
                                    stride, [seed])
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
    _, chips = batch_negative_chips(props, np.zeros(len(props), np.int64), [image_size], [scale], chip_size,
                                    stride, (np.zeros(len(pos), np.int64), pos), [min_proposals], [seed])
    return chips


def batch_positive_chips(boxes, problem, image_sizes, scales, chip_size, stride, seeds):
    """:func:`positive_chips` of P problems at once, each one image at one scale with one seed.

    Planning many problems in one call shares the numpy work of every greedy step among them (the
    point of it: small images cost little more than the call overhead). A problem's chips do not
    depend on the other problems.

    Args:
        boxes: (M, 4) float32 XYXY in original-image pixels, the boxes to cover: inside their
            image, of positive size and valid at the problem's scale (what :func:`positive_chips`
            keeps), each belonging to one problem.
        problem: (M,) int, the problem (in [0, P)) of each box.
        image_sizes: (P, 2) (height, width) of each problem's image.
        scales: (P,) resolved resize factors (> 0).
        chip_size, stride (int): as in :func:`positive_chips`.
        seeds: P seeds, each as ``seed`` of :func:`positive_chips`, or a (P, L) int array (P seeds
            of L ints).

    Returns:
        problem (K,) int64 ascending, chips (K, 4) float32: the chips of problem p are the rows
        where ``problem == p``, as :func:`positive_chips` returns them.
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    grids, padded, live = _problems(boxes, problem, image_sizes, scales, chip_size, stride, seeds)
    if len(grids) == 0:
        return np.zeros(0, np.int64), np.zeros((0, 4), np.float32)
    live &= grids.fits(padded)
    p, chips, off_grid = _cover(grids, padded, live, np.ones(len(grids), np.int64))
    extra_p, extra = [], []
    for q in np.flatnonzero(off_grid.any(axis=1)):
        # A chip picked on the grid may already hold some of them.
        missed = padded[q][off_grid[q]]
        missed = missed[~boxes_inside(missed, chips[p == q]).any(axis=1)]
        extra.append(_fallback_chips(missed, grids.chip_w[q], grids.chip_h[q], grids.width[q], grids.height[q]))
        extra_p.append(np.full(len(extra[-1]), q))
    if extra:
        p, chips = np.concatenate([p] + extra_p), np.concatenate([chips] + extra)
        order = np.argsort(p, kind="stable")
        p, chips = p[order], chips[order]
    return p, chips


def batch_negative_chips(proposals, problem, image_sizes, scales, chip_size, stride, positive, min_proposals,
                         seeds):
    """:func:`negative_chips` of P problems at once (see :func:`batch_positive_chips`).

    Args:
        proposals: (M, 4) float32 XYXY in original-image pixels: inside their image, of positive
            size and valid at the problem's scale (what :func:`negative_chips` keeps).
        problem: (M,) int, the problem of each proposal.
        positive: (problem (K,) int, chips (K, 4) float): the positive chips of each problem
            (proposals inside one of them are dropped).
        min_proposals: (P,) int, fewest proposals a chip of problem p must hold (below 1 counts as 1).
        image_sizes, scales, chip_size, stride, seeds: as in :func:`batch_positive_chips`.

    Returns:
        problem (J,) int64 ascending, chips (J, 4) float32, in greedy order within a problem.
    """
    proposals = np.asarray(proposals, np.float32).reshape(-1, 4)
    grids, padded, live = _problems(proposals, problem, image_sizes, scales, chip_size, stride, seeds)
    if len(grids) == 0:
        return np.zeros(0, np.int64), np.zeros((0, 4), np.float32)
    live &= grids.fits(padded)
    pos_problem, pos_chips = positive
    if len(pos_chips) and live.any():
        chips, has = _pad(np.asarray(pos_problem, np.int64), np.asarray(pos_chips, np.float32).reshape(-1, 4),
                          len(grids))
        b, c = padded[:, :, None, :], chips[:, None, :, :]
        inside = ((b[..., 0] >= c[..., 0]) & (b[..., 1] >= c[..., 1]) & (b[..., 2] <= c[..., 2])
                  & (b[..., 3] <= c[..., 3]) & has[:, None, :])
        live &= ~inside.any(axis=2)
    p, chips, _ = _cover(grids, padded, live, np.asarray(min_proposals, np.int64).reshape(len(grids)))
    return p, chips


def _problems(boxes, problem, image_sizes, scales, chip_size, stride, seeds):
    """The grids of P problems and their boxes padded to (P, N, 4), with the (P, N) mask of real ones."""
    image_sizes = np.asarray(image_sizes, np.float64).reshape(-1, 2)
    scales = np.asarray(scales, np.float64).reshape(-1)
    if not (chip_size > 0 and stride > 0):
        raise ValueError(f"chip_size and stride must be positive, got {chip_size}, {stride}")
    keys, seeded = _seed_keys(seeds)
    if not len(keys) == len(scales) == len(image_sizes):
        raise ValueError(f"{len(keys)} seeds, {len(scales)} scales and {len(image_sizes)} image sizes: "
                         "give one of each per problem")
    grids = _Grids(image_sizes, scales, chip_size, stride, keys, seeded)
    padded, live = _pad(np.asarray(problem, np.int64).reshape(-1), boxes, len(keys))
    return grids, padded, live


def _cover(grids, boxes, live, min_count):
    """Greedily cover, with chips of ``grids``, the live boxes of each problem.

    Args:
        grids (_Grids): the chip grids of P problems.
        boxes: (P, N, 4) float32 XYXY in original-image pixels, each fitting its problem's chip.
        live: (P, N) bool, the boxes to cover. min_count: (P,) int, fewest not-yet-covered boxes
            a chip of problem p must hold to be picked.

    Returns:
        problem (K,) int64 ascending, chips (K, 4) float32 XYXY in original-image pixels, in
        greedy order within a problem; off_grid: (P, N) bool, the live boxes that lie inside no
        chip of their grid (the stride skips every start that would hold them): the caller
        decides whether they need chips of their own (:func:`_fallback_chips`).
    """
    ranges = grids.ranges(boxes)
    xlo, xhi, ylo, yhi = ranges
    on_grid = live & (xlo <= xhi) & (ylo <= yhi)
    p, iy, ix = _greedy_cover(grids, ranges, on_grid, min_count)
    return p, grids.chips(p, iy, ix), live & ~on_grid
