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
covers it runs with. Within a cover, a step takes every pick that cannot interact with a better
one (the best cell of a block of the grid that beats its neighbouring blocks), so a large image
(an orthomosaic: tens of thousands of chips) needs a few dozen steps, not one per chip; the
picks, and their order, are still the sequential greedy's (see :func:`_greedy_cover`). Random numbers (grid offsets, priorities, placements) are a hash of (seed,
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
    """(P, ny, nx) float32 (a strided view): how many of the rectangles ``[y0, y1] x [x0, x1]`` of
    row ``p`` hold each cell (a difference array and two cumulative sums)."""
    num, ny, nx = shape
    row, plane = nx + 1, (ny + 1) * (nx + 1)
    base = p * plane
    corners = np.concatenate([base + y0 * row + x0, base + y0 * row + x1 + 1,
                              base + (y1 + 1) * row + x0, base + (y1 + 1) * row + x1 + 1])
    weights = np.repeat([1.0, -1.0, -1.0, 1.0], len(p))
    diff = np.bincount(corners, weights=weights, minlength=num * plane).astype(np.float32).reshape(num, ny + 1, row)
    np.cumsum(diff, axis=1, out=diff)
    np.cumsum(diff, axis=2, out=diff)
    return diff[:, :ny, :nx]


def _gather_ranges(starts, stops):
    """Concatenated ``arange(starts[k], stops[k])`` for every k, and the k of each entry (no loop)."""
    lengths = np.maximum(stops - starts, 0)
    owner = np.repeat(np.arange(len(starts)), lengths)
    return starts[owner] + np.arange(len(owner)) - np.repeat(np.cumsum(lengths) - lengths, lengths), owner


def _greedy_cover(grids, ranges, live, min_count):
    """Greedy set cover of the live boxes by grid cells, every problem (row) at once.

    The result is the textbook sequential greedy's, pick for pick: each pick of problem p takes a
    cell covered by the most of its not-yet-covered boxes; it stops when the best cell covers fewer
    than ``min_count[p]`` (>= 1). Without a seed, ties go to the first cell in row-major order.
    With a seed, ties between cells covering different boxes go to the cell of highest random
    priority (the sum of a random number drawn per grid row and one per grid column), and the pick
    is then placed uniformly at random among the cells that cover the same boxes (so objects do not
    always sit at a chip's border). A problem's picks do not depend on the other problems.

    Counting works on a compressed grid (see :func:`_compress`): rows and columns are the box
    ranges' lower ends, counts come from a difference array, and a pick subtracts the rectangles
    of the boxes it newly covered.

    Many picks per step (what makes a 30k x 30k orthomosaic fast): two cells *interact* when some
    box holds both; they are then at most ``D`` rows and ``D`` columns apart (``D``: the longest box
    range). The grid is cut into blocks of ``D x D`` cells, and each step takes, in every block at
    once, the block's best cell when it beats the best cells of the 8 neighbouring blocks (it then
    beats every cell it interacts with). Such a cell is one the sequential greedy also picks, with
    the same boxes: any pick that would change its boxes first must beat it, and counts only fall.
    Cells picked in one step share no box. Ordering the picks by (count at pick time, descending;
    tie rule) gives the sequential greedy's order. A block's best cell is recomputed only when a
    subtraction lowered it. Boxes are found through their home block (the block of their range's
    first cell): a pick's boxes live in its block or the block left, above, or above-left of it.

    Args:
        grids (_Grids). ranges: (xlo, xhi, ylo, yhi) (P, N) int64 from ``grids.ranges``.
        live: (P, N) bool, the boxes to cover (each with a non-empty range).
        min_count: (P,) int.

    Returns:
        (p, iy, ix) int64 arrays: the picked cells, grouped by problem, in pick order within one.
    """
    xlo, xhi, ylo, yhi = ranges
    num = len(live)
    none = (np.zeros(0, np.int64),) * 3
    if not live.any():
        return none
    ux, cxlo, cxhi = _compress(xlo, xhi, live, grids.x0.shape[1])
    uy, cylo, cyhi = _compress(ylo, yhi, live, grids.y0.shape[1])
    ny, nx = uy.shape[1], ux.shape[1]
    p, n = np.nonzero(live)
    y0, y1, x0, x1 = cylo[p, n], cyhi[p, n], cxlo[p, n], cxhi[p, n]
    # Blocks of by x bx cells (row-major within a block), the grid padded to whole blocks: padding
    # cells count 0 boxes, so they never win a block that holds a box.
    by, bx = max(1, int((y1 - y0).max())), max(1, int((x1 - x0).max()))
    nby, nbx = -(-ny // by), -(-nx // bx)
    score = _rectangle_counts(p, y0, y1, x0, x1, (num, nby * by, nbx * bx))
    seeded = grids.seeded
    if seeded.any():
        # Tie-break priority of a cell: a random number per grid row plus one per grid column (each
        # in [0, 0.25), a function of the real position, whatever the padding): cheap to draw.
        keys = grids.keys[:, None]
        row_prio = (0.25 * seeded)[:, None] * _uniforms(keys, _PRIORITY, uy << 1)
        col_prio = (0.25 * seeded)[:, None] * _uniforms(keys, _PRIORITY, (ux << 1) + 1)
        score[:, :ny, :nx] += (row_prio[:, :, None] + col_prio[:, None, :]).astype(np.float32)
    # `cells` (B, by * bx), B = num * nby * nbx blocks; one spare cell at the end of `flat`: the
    # target of the cells outside a rectangle in the subtractions below.
    flat = np.empty(score.size + 1, np.float32)
    cells = flat[:-1].reshape(-1, by * bx)
    cells.reshape(num, nby, nbx, by, bx)[...] = score.reshape(num, nby, by, nbx, bx).transpose(0, 1, 3, 2, 4)
    del score
    spare = len(flat) - 1
    # The flat index of compressed cell (y, x) of problem q is q * plane + row_at[y] + col_at[x].
    plane = nby * nbx * by * bx
    yy, xx = np.arange(nby * by + by), np.arange(nbx * bx + bx)
    row_at = np.minimum(yy // by, nby - 1) * (nbx * by * bx) + yy % by * bx
    col_at = np.minimum(xx // bx, nbx - 1) * (by * bx) + xx % bx
    span_y, span_x = np.arange(by + 1), np.arange(bx + 1)
    best = cells.max(axis=1)
    arg = cells.argmax(axis=1)
    block = np.arange(len(cells))
    block_row, block_col = block // nbx % nby, block % nbx
    need = np.repeat(np.maximum(np.asarray(min_count, np.float64), 1).reshape(num), nby * nbx)

    def order_key(b):
        """int64 keys of the best cells of blocks ``b``, larger for the cell the greedy prefers: its
        count (the bits of a float32 >= 0 order like the float), then its row-major rank within
        its problem, smaller first (the tie rule)."""
        rank = (block_row[b] * by + arg[b] // bx) * (nbx * bx) + block_col[b] * bx + arg[b] % bx
        return (best[b].view(np.int32).astype(np.int64) << 32) + ((1 << 32) - 1 - rank)

    key = np.append(order_key(block), np.iinfo(np.int64).min)  # the last: no block (off the edge)
    # Boxes by home block (the block of their first cell).
    home = (p * nby + y0 // by) * nbx + x0 // bx
    order = np.argsort(home, kind="stable")
    p, y0, y1, x0, x1 = p[order], y0[order], y1[order], x0[order], x1[order]
    real = np.stack([ylo, xlo, yhi, xhi])[:, p, n[order]]
    bounds = np.searchsorted(home[order], np.arange(len(cells) + 1))
    alive = np.ones(len(p), bool)
    # The 8 neighbouring blocks of every block (len(cells) where off the edge).
    around = [np.where((block_row + dr >= 0) & (block_row + dr < nby) & (block_col + dc >= 0)
                       & (block_col + dc < nbx), block + dr * nbx + dc, len(cells))
              for dr in (-1, 0, 1) for dc in (-1, 0, 1) if dr or dc]
    picked = []  # per step: (blocks, count at pick time, rank, lo (2, K), hi (2, K)) of its K picks
    while True:
        # Blocks that may pick: their best cell counts enough boxes and beats its neighbours' best.
        sel = np.flatnonzero(best >= need)
        mine = key[sel]
        for other in around:
            beats = mine > key[other[sel]]
            sel, mine = sel[beats], mine[beats]
        if not len(sel):
            break
        value, index = best[sel], (1 << 32) - 1 - (mine & ((1 << 32) - 1))
        sy = block_row[sel] * by + arg[sel] // bx
        sx = block_col[sel] * bx + arg[sel] % bx
        # Candidate boxes: homes in the block and the one left of it, and in the two above them
        # (two runs of `bounds`, as blocks of a row are numbered left to right), pick by pick.
        left = (block_col[sel] > 0).astype(np.int64)
        up = np.maximum(sel - nbx, 0)
        has_up = block_row[sel] > 0
        starts = np.stack([bounds[sel - left], np.where(has_up, bounds[up - left], 0)], axis=1)
        stops = np.stack([bounds[sel + 1], np.where(has_up, bounds[up + 1], 0)], axis=1)
        k, owner = _gather_ranges(starts.reshape(-1), stops.reshape(-1))
        owner //= 2
        hit = (alive[k] & (y0[k] <= sy[owner]) & (sy[owner] <= y1[k])
               & (x0[k] <= sx[owner]) & (sx[owner] <= x1[k]))
        k, owner = k[hit], owner[hit]
        first = np.flatnonzero(np.concatenate([[True], owner[1:] != owner[:-1]]))
        lo = np.maximum.reduceat(real[:2, k], first, axis=1)
        hi = np.minimum.reduceat(real[2:, k], first, axis=1)
        picked.append((sel, value, index, lo, hi))
        alive[k] = False
        # Subtract the rectangles of the boxes just covered, whichever way touches fewer cells:
        height, width = y1[k] - y0[k] + 1, x1[k] - x0[k] + 1
        area = height * width
        costs = (3 * int(area.sum()), len(k) * (by + 1) * (bx + 1), 2 * len(sel) * (2 * by + 1) * (2 * bx + 1))
        if costs[0] <= min(costs[1:]):
            # cell by cell (small rectangles on a coarse compressed grid), or
            j = np.repeat(np.arange(len(k)), area)
            dy, dx = np.divmod(np.arange(len(j)) - np.repeat(np.cumsum(area) - area, area), width[j])
            kj = k[j]
            np.subtract.at(flat, p[kj] * plane + row_at[y0[kj] + dy] + col_at[x0[kj] + dx], np.float32(1.0))
        elif costs[1] <= costs[2]:
            # each box's rectangle as a (by + 1) x (bx + 1) window (cells outside it sent to the
            # spare cell), or
            ry, rx = y0[k][:, None] + span_y, x0[k][:, None] + span_x
            target = (p[k] * plane)[:, None, None] + row_at[ry][:, :, None] + col_at[rx][:, None, :]
            outside = (ry > y1[k][:, None])[:, :, None] | (rx > x1[k][:, None])[:, None, :]
            target[outside] = spare
            np.subtract.at(flat, target.reshape(-1), np.float32(1.0))
        else:
            # per pick, the count of its boxes over the window of cells they can hold (a box holds
            # the picked cell and spans at most by + 1 rows and bx + 1 columns): the product of
            # their row and column indicators, (rows x boxes) @ (boxes x columns).
            wy, wx = np.arange(2 * by + 1), np.arange(2 * bx + 1)
            slot = np.arange(len(k)) - first[owner]  # every pick covers a box: owner is its group
            rows = np.zeros((len(sel), int(slot.max()) + 1, len(wy)), np.float32)
            cols = np.zeros((len(sel), rows.shape[1], len(wx)), np.float32)
            top, lft = sy[owner] - by, sx[owner] - bx
            rows[owner, slot] = (wy >= (y0[k] - top)[:, None]) & (wy <= (y1[k] - top)[:, None])
            cols[owner, slot] = (wx >= (x0[k] - lft)[:, None]) & (wx <= (x1[k] - lft)[:, None])
            count = np.matmul(rows.transpose(0, 2, 1), cols)
            ry = np.clip(sy[:, None] - by + wy, 0, len(row_at) - 1)
            rx = np.clip(sx[:, None] - bx + wx, 0, len(col_at) - 1)
            target = (sel // (nby * nbx) * plane)[:, None, None] + row_at[ry][:, :, None] + col_at[rx][:, None, :]
            np.subtract.at(flat, target.reshape(-1), count.reshape(-1))
        mark = np.zeros(len(cells), bool)
        for dr in (-1, 0, 1):
            mark[np.clip(sel[:, None] + dr * nbx + np.arange(-1, 2), 0, len(cells) - 1)] = True
        cand = np.flatnonzero(mark)
        dirty = cand[cells[cand, arg[cand]] != best[cand]]
        if len(dirty):
            sub = cells[dirty]
            arg[dirty] = sub.argmax(axis=1)
            best[dirty] = sub[np.arange(len(dirty)), arg[dirty]]
            key[dirty] = order_key(dirty)
    if not picked:
        return none
    sel, value, index, lo, hi = (np.concatenate(c, axis=-1) for c in zip(*picked))
    prob = sel // (nby * nbx)
    # The sequential greedy's order: by problem, then count at pick time (descending), then rank.
    order = np.lexsort((index, -value, prob))
    prob, lo, hi = prob[order], lo[:, order], hi[:, order]
    if seeded.any():
        start = np.searchsorted(prob, np.arange(num))
        step = np.arange(len(prob)) - start[prob]
        place = seeded[prob, None] * _uniforms(grids.keys[prob, None], _PLACE, 2 * step[:, None] + np.arange(2))
        lo = lo + (place.T * (hi - lo + 1)).astype(np.int64)
    return prob.astype(np.int64), lo[0].astype(np.int64), lo[1].astype(np.int64)


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
    (:class:`sniper_d2.config_types.ValidRange` or a config pair; ``lo <= size < hi``); boxes (N, 4) XYXY."""
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
