"""Object size statistics of a data set, and the SNIPER settings they call for. Numpy only.

Sizes are ``sqrt(w * h)`` of boxes in original-image pixels ("absolute"), and that divided by
``sqrt(H * W)`` of the image ("relative"). Crowd boxes are left out.

How the settings are derived (:func:`suggest_sniper_params`; worked example in docs/planning.md):

1. The detector's *band*, in pixels of the image it sees, is
   ``[a_lo, a_hi] = [smallest anchor, min(largest anchor, CHIP_SIZE / 2)]``: objects smaller than
   the smallest anchor are hard to match, and objects over half a chip are often cut by chip
   borders. Its width is ``W = a_hi / a_lo``. Anchor sizes come from the config unless given.
2. The objects to serve are those between the low and high size percentiles ``[p_lo, p_hi]``
   (default 2 % / 98 %). Scale ``s`` puts object size ``x`` in the band when
   ``a_lo / x <= s <= a_hi / x``; the finest scale needed is ``s_fine = a_lo / p_lo``, the
   coarsest ``s_coarse = a_hi / p_hi``, and the span to bridge is ``R = s_fine / s_coarse =
   (p_hi / p_lo) / W``.
3. Scales form a geometric chain from ``s_fine`` (capped at ``max_scale``; the finest scale sets
   the cost, so it is never finer than needed) down by the ratio ``r = sqrt(W)``: neighbouring
   valid ranges then overlap by half the band, so every object is valid at one or two scales. The
   number of scales is the fewest that reach ``s_coarse``, ``n = 1 + ceil(log R / log sqrt(W))``,
   but at least ``min_scales`` (default 2): when the span fits in the band (``R <= 1``), a second
   scale ``sqrt(W)`` coarser than ``s_fine`` is added, because one scale trained clearly worse than
   two on dense single-band data (AP 44.4 +- 4.0 vs 53.3 +- 1.1 over 3 seeds, docs/planning.md: the
   second scale acts as scale augmentation); it stays only if it holds ``min_fraction`` of the
   objects (step 5). With ``min_scales=1`` such a span gets one scale that centres it. A
   caller may ask for another count (``num_scales``): fewer scales stretch the ratio to
   ``R ** (1 / (n - 1))`` (less overlap; coverage holds while that is at most ``W``), more scales
   extend the chain to coarser levels at ``sqrt(W)``. How many scales pay off was measured (see
   docs/planning.md and benchmarks/bench_accuracy.py), not assumed.
4. Scale ``s`` is valid for objects of original size ``[a_lo / s, a_hi / s)``; the finest starts
   at 0 (tiny objects still have nowhere better to go).
5. A scale whose valid range holds less than ``min_fraction`` (default 1 %) of the objects is
   dropped, emptiest first, when every object between the percentiles that it holds in the band is
   in the band at another kept scale (a gap in a bimodal distribution needs no scale).
6. The whole-image level ``FIT_SCALE`` (-1: the long side fit to ``CHIP_SIZE``, one chip per image)
   is added only when objects need it: at least ``min_fraction`` of the objects are larger than
   the coarsest fixed range, the median image's fit factor ``CHIP_SIZE / long side`` is coarser
   than the coarsest fixed scale (by 1.25x), and it puts the median of those objects in the band.
   Its range starts where the coarsest fixed range ends (or lower, at ``a_lo`` / fit factor) and is
   open above. When such objects exist but the whole image would not serve them, the coarsest
   fixed range is opened above instead (they stay positives there, up to chip size).
7. ``CHIP_STRIDE`` = ``CHIP_SIZE / 16`` (rounded to a multiple of 8); ``NEG.MIN_PROPOSALS`` = 25 at
   the finest scale and 10 elsewhere (original SNIPER); test scales are the training scales and test
   ranges the training ranges shifted down, ``(0.8 lo, 0.7 hi)``: an object near the top of a
   scale's range is nearly chip-sized there and seldom whole in a training chip, so the next coarser
   scale, which saw it comfortably, should detect it; that scale in turn reaches a little below its
   training range. The coarsest test range is open above. (The original SNIPER widened both ends; on
   the synthetic demo set, widening the upper end cost 13 AP_large points against this rule; see
   docs/planning.md.)

Anything the rule cannot achieve (objects below the smallest anchor even at ``max_scale``) is
listed in ``ScaleSuggestion.warnings``.

:func:`estimate_cost` plans a sample of images with the real planner (:func:`sniper_d2.plans.build_plan`,
one epoch) and compares SNIPER's chip pixels per image with the full pyramid at the same scales and
with the single-scale alternative that puts the median object in the middle of the band;
:func:`cost_report` says in one line when SNIPER saves little (dense objects in one size band).
"""

import ast
import logging
import math
import os
from dataclasses import dataclass

import numpy as np

from .coco import DatasetError, non_crowd_boxes
from .config import FIT_SCALE, NO_UPPER_BOUND, ConfigError, is_fit, require_config_file

__all__ = ["object_sizes", "image_sizes", "size_summary", "comfortable_band", "ScaleSuggestion",
           "suggest_sniper_params", "object_levels", "single_scale_alternative", "estimate_cost",
           "saves_little", "cost_report", "plot_size_histogram", "read_config_yaml", "config_value",
           "DEFAULT_ANCHOR_SIZES", "SAVES_LITTLE_RATIO"]

logger = logging.getLogger(__name__)

# detectron2's default MODEL.ANCHOR_GENERATOR.SIZES for FPN models, flattened.
DEFAULT_ANCHOR_SIZES = (32, 64, 128, 256, 512)


# ------------------------------------------------------------------------------------------------
# Sizes
# ------------------------------------------------------------------------------------------------
def image_sizes(records):
    """(M, 2) float64 (height, width) of every image."""
    return np.array([(r["height"], r["width"]) for r in records], np.float64).reshape(-1, 2)


def object_sizes(records):
    """Object sizes of a data set, crowd boxes left out.

    Args:
        records (list[dict]): see :func:`sniper_d2.coco.load_coco_records`.

    Returns:
        (absolute (N,) float64 sqrt(w*h) in original pixels,
         relative (N,) float64 absolute / sqrt(H*W) of its image,
         image_index (N,) int64 index into ``records``)
    """
    per_image = [non_crowd_boxes(r) for r in records]
    counts = np.array([len(b) for b in per_image], np.int64)
    if counts.sum() == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0, np.int64)
    boxes = np.concatenate(per_image).astype(np.float64)
    image_index = np.repeat(np.arange(len(records)), counts)
    absolute = np.sqrt(np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None))
    sizes = image_sizes(records)
    relative = absolute / np.sqrt(sizes[image_index, 0] * sizes[image_index, 1])
    return absolute, relative, image_index


def size_summary(absolute, relative, percentiles=(1, 2, 5, 10, 25, 50, 75, 90, 95, 98, 99)):
    """Text table of size percentiles (absolute px and relative to the image)."""
    if len(absolute) == 0:
        return "no objects"
    pa = np.percentile(absolute, percentiles)
    pr = np.percentile(relative, percentiles)
    lines = [f"{'percentile':>10} {'sqrt(area) px':>14} {'relative':>9}"]
    lines += [f"{p:>10} {a:>14.1f} {r:>9.4f}" for p, a, r in zip(percentiles, pa, pr)]
    edges = np.array([0, 8, 16, 32, 64, 128, 256, 512, np.inf])
    hist = np.histogram(absolute, edges)[0]
    lines.append("size bands (px): " + ", ".join(
        f"[{int(lo)},{'inf' if math.isinf(hi) else int(hi)}): {n}" for lo, hi, n in zip(edges[:-1], edges[1:], hist)))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# Derivation
# ------------------------------------------------------------------------------------------------
def comfortable_band(anchor_sizes, chip_size):
    """(a_lo, a_hi) scaled pixels: smallest anchor .. min(largest anchor, chip_size / 2)."""
    sizes = np.asarray(list(_flatten(anchor_sizes)), np.float64)
    if len(sizes) == 0 or (sizes <= 0).any():
        raise ValueError(f"anchor sizes must be positive numbers, got {anchor_sizes}")
    lo = float(sizes.min())
    hi = float(min(sizes.max(), chip_size / 2.0))
    if hi < 2 * lo:
        raise ValueError(f"the comfortable band [{lo:g}, {hi:g}] px (anchors {list(sizes)}, chip "
                         f"{chip_size}) is narrower than 2x: give larger anchors or a larger chip")
    return lo, hi


def _flatten(x):
    if isinstance(x, (list, tuple, np.ndarray)):
        for item in x:
            yield from _flatten(item)
    else:
        yield float(x)


@dataclass
class ScaleSuggestion:
    """Derived SNIPER settings (config units: see :mod:`sniper_d2.config`).

    Attributes:
        scales (tuple[float]): resize factors, finest first; FIT_SCALE (-1) last when present.
        valid_ranges (tuple[tuple[float, float]]): per scale (lo, hi) on sqrt(w*h) in original px,
            hi = -1 for no upper bound.
        chip_size, chip_stride (int): scaled pixels.
        neg_min_proposals (tuple[int]): per scale.
        test_scales, test_valid_ranges: for ``SNIPER.TEST``.
        band (tuple[float, float]): the band (a_lo, a_hi) in scaled pixels it was derived from.
        percentiles (tuple[float, float]): the low / high size percentiles (p_lo, p_hi), original px.
        fractions (tuple[float]): per scale, the fraction of the objects inside its valid range.
        fit_scale (float): the median image's FIT_SCALE factor, CHIP_SIZE / median long side.
        warnings (tuple[str]): what the rule could not achieve, one line each.
        explanation (tuple[str]): why these scales, one line each (printed by the tool).
    """

    scales: tuple
    valid_ranges: tuple
    chip_size: int
    chip_stride: int
    neg_min_proposals: tuple
    test_scales: tuple
    test_valid_ranges: tuple
    band: tuple = (0.0, 0.0)
    percentiles: tuple = (0.0, 0.0)
    fractions: tuple = ()
    fit_scale: float = 0.0
    warnings: tuple = ()
    explanation: tuple = ()

    def to_yaml(self):
        """A ``SNIPER:`` fragment for a detectron2 yaml config (keys as in sniper_d2/config.py)."""
        return "\n".join(["SNIPER:"] + self.yaml_lines()) + "\n"

    def yaml_lines(self, indent="  "):
        """The keys of :meth:`to_yaml` under ``SNIPER:``, indented by ``indent``."""
        def seq(values):
            return "[" + ", ".join(_num(v) for v in values) + "]"

        def ranges(rs):
            return "[" + ", ".join(seq(r) for r in rs) + "]"

        return [
            f"{indent}SCALES: {seq(self.scales)}",
            f"{indent}VALID_RANGES: {ranges(self.valid_ranges)}",
            f"{indent}CHIP_SIZE: {int(self.chip_size)}",
            f"{indent}CHIP_STRIDE: {int(self.chip_stride)}",
            f"{indent}NEG:",
            f"{indent}  MIN_PROPOSALS: [{', '.join(str(int(m)) for m in self.neg_min_proposals)}]",
            f"{indent}TEST:",
            f"{indent}  SCALES: {seq(self.test_scales)}",
            f"{indent}  VALID_RANGES: {ranges(self.test_valid_ranges)}",
        ]

    def scale_at(self, k, image_size):
        """The resize factor of level ``k`` for an image of (height, width)."""
        s = self.scales[k]
        return self.chip_size / float(max(image_size)) if is_fit(s) else float(s)


def _num(v):
    return f"{float(v):.1f}" if float(v) == round(float(v), 1) else f"{float(v):.4g}"


def _round_sig(x, digits=3):
    return float(f"{x:.{digits}g}")


def _ceil_sig(x, digits=3):
    """``x`` rounded up to ``digits`` significant digits."""
    unit = 10.0 ** (math.floor(math.log10(x)) - digits + 1)
    return float(f"{math.ceil(x / unit - 1e-9) * unit:.{digits}g}")


def _in_range(x, lo, hi):
    """(N,) bool: lo <= x < hi, hi = -1 for no upper bound."""
    return (x >= lo) & ((x < hi) if hi != NO_UPPER_BOUND else True)


def _scale_chain(s_fine, s_coarse, band_width, num_scales=None, max_scale=4.0, min_scales=2):
    """Fixed scales, finest first (see the module docstring, step 3).

    Returns:
        (scales list[float] unrounded, n_needed int: the count the rule chooses, at least
        ``min_scales``; ``num_scales``, when given, overrides it).
    """
    r_max = math.sqrt(band_width)
    span = s_fine / s_coarse
    n_cover = 1 if span <= 1 + 1e-9 else 1 + math.ceil(math.log(span) / math.log(r_max) - 1e-9)
    n_needed = max(n_cover, int(min_scales))
    n = n_needed if num_scales is None else int(num_scales)
    if n < 1:
        raise ValueError(f"num_scales must be at least 1, got {num_scales}")
    if n == 1:
        scales = [math.sqrt(s_fine * s_coarse)]  # centres the span (it fits in the band when n_needed == 1)
    else:
        r = max(r_max, span ** (1.0 / (n - 1)))
        scales = [s_fine / r ** k for k in range(n)]
    if scales[0] > max_scale:
        scales = [s * max_scale / scales[0] for s in scales]
    return scales, n_needed


def suggest_sniper_params(absolute, sizes_hw, anchor_sizes=DEFAULT_ANCHOR_SIZES, chip_size=512,
                          low_percentile=2.0, max_scale=4.0, min_fraction=0.01, num_scales=None,
                          test_factors=(0.8, 0.7), min_scales=2):
    """Derive SNIPER scales, valid ranges, chip size and stride (see the module docstring).

    Args:
        absolute: (N,) object sizes sqrt(w*h), original pixels.
        sizes_hw: (M, 2) image (height, width), pixels.
        anchor_sizes: the RPN anchor sizes (nested lists allowed), scaled pixels.
        chip_size (int): chip side, scaled pixels.
        low_percentile (float): objects between this size percentile and ``100 - low_percentile``
            are put in the band at some scale.
        max_scale (float): largest resize factor allowed.
        min_fraction (float): a scale whose valid range holds a smaller fraction of the objects is
            dropped when the others cover what it holds; the fit level needs this fraction too.
        num_scales (int or None): fixed scales before dropping; None = the fewest that cover, at
            least ``min_scales``.
        test_factors (tuple[float, float]): factors applied to (lo, hi) of the training ranges to
            give the test ranges (an upper bound is never lowered below the next scale's test lower
            bound, so every size stays covered).
        min_scales (int): the fewest fixed scales the rule chooses (before dropping nearly empty
            ones); 2 by default (measured: see the module docstring, step 3).

    Returns:
        ScaleSuggestion
    """
    absolute = np.asarray(absolute, np.float64)
    absolute = absolute[np.isfinite(absolute) & (absolute > 0)]
    if len(absolute) == 0:
        raise DatasetError("the data set has no (non-crowd, non-empty) boxes: nothing to derive scales from")
    a_lo, a_hi = comfortable_band(anchor_sizes, chip_size)
    width = a_hi / a_lo
    p_lo = float(np.percentile(absolute, low_percentile))
    p_hi = float(np.percentile(absolute, 100 - low_percentile))
    long_side = float(np.median(np.asarray(sizes_hw, np.float64).reshape(-1, 2).max(axis=1)))
    s_fit = chip_size / long_side
    s_fine, s_coarse = a_lo / p_lo, a_hi / p_hi
    chain, n_needed = _scale_chain(s_fine, s_coarse, width, num_scales, max_scale, min_scales)
    # Round up the finest (its band must reach down to p_lo) and the others to 3 digits.
    fixed = [_ceil_sig(chain[0])] + [_round_sig(s) for s in chain[1:]]
    fixed = sorted(set(fixed), reverse=True)
    explanation = [
        f"objects between the size percentiles {low_percentile:g} / {100 - low_percentile:g}: "
        f"{p_lo:.1f}-{p_hi:.1f} px ({p_hi / p_lo:.1f}x); band {a_lo:g}-{a_hi:g} scaled px ({width:.1f}x)",
        (f"the span fits in the band: one scale, {fixed[0]:g}x, puts all of it there" if n_needed == 1 else
         f"the span fits in the band at one scale; a second, {math.sqrt(width):.2f}x coarser, is added (at least "
         f"{min_scales} scales: one trained clearly worse than two on dense single-band data, docs/planning.md)"
         if s_fine / s_coarse <= 1 + 1e-9 else
         f"{n_needed} scales from {s_fine:.3g}x (p_lo at the smallest anchor), a ratio of at most "
         f"sqrt({width:.1f}) = {math.sqrt(width):.2f} apart (valid ranges overlap by half the band), "
         f"reach {s_coarse:.3g}x (p_hi at the band's top)")]
    if num_scales is not None and num_scales != n_needed:
        explanation.append(f"{num_scales} fixed scales asked for instead of {n_needed}")

    in_band = np.stack([(absolute * s >= a_lo) & (absolute * s <= a_hi) for s in fixed])  # (S, N)
    served = (absolute >= p_lo) & (absolute <= p_hi)
    keep = list(range(len(fixed)))

    def ranges_of(kept):
        rs = [[_round_sig(a_lo / fixed[k]), _round_sig(a_hi / fixed[k])] for k in kept]
        rs[0][0] = 0.0
        return rs

    while len(keep) > 1:
        rs = ranges_of(keep)
        frac = [float(_in_range(absolute, lo, hi).mean()) for lo, hi in rs]
        dropped = False
        for j in np.argsort(frac, kind="stable"):
            if frac[j] >= min_fraction:
                break
            others = [k for k in keep if k != keep[j]]
            holds = served & in_band[keep[j]]
            if not holds.any() or in_band[others][:, holds].any(axis=0).all():
                explanation.append(f"dropped {fixed[keep[j]]:g}x: its range holds {100 * frac[j]:.2f}% of "
                                   f"the objects, all in the band at another scale")
                keep.pop(int(j))
                dropped = True
                break
        if not dropped:
            break
    scales = [fixed[k] for k in keep]
    ranges = ranges_of(keep)

    above = absolute >= ranges[-1][1]
    if above.mean() >= min_fraction:
        # The whole image helps only if it is coarser and puts (most of) those objects in the band.
        if s_fit * 1.25 <= scales[-1] and np.median(absolute[above]) * s_fit >= a_lo:
            scales.append(FIT_SCALE)
            ranges.append([min(_round_sig(a_lo / s_fit), ranges[-1][1]), NO_UPPER_BOUND])
            explanation.append(f"whole-image level (fit, {s_fit:.3g}x for the median image) added for the "
                               f"{100 * above.mean():.1f}% of objects above {ranges[-2][1]:g} px")
        else:
            explanation.append(f"the {100 * above.mean():.1f}% of objects above {ranges[-1][1]:g} px stay "
                               f"valid at {scales[-1]:g}x (range open above; a whole-image level would not "
                               f"put them in the band)")
            ranges[-1][1] = NO_UPPER_BOUND
    else:
        explanation.append(f"no whole-image level: {100 * above.mean():.2f}% of the objects are above "
                           f"{ranges[-1][1]:g} px (ignored in training; the coarsest test range is open above)")

    warnings = []
    if p_lo * scales[0] < a_lo * 0.99:
        warnings.append(f"objects below {a_lo / scales[0]:.1f} px ({100 * (absolute < a_lo / scales[0]).mean():.1f}%) "
                        f"stay below the smallest anchor ({a_lo:g} px) even at the finest scale {scales[0]:g}x "
                        f"(max_scale {max_scale:g}): give smaller anchors or accept them as hard")
    fractions = tuple(float(_in_range(absolute, lo, hi).mean()) for lo, hi in ranges)

    test_ranges = [[_round_sig(lo * test_factors[0]), hi] for lo, hi in ranges]
    for k in range(len(test_ranges) - 1):
        next_lo = test_ranges[k + 1][0]
        test_ranges[k][1] = max(_round_sig(ranges[k][1] * test_factors[1]), _round_sig(next_lo * 1.25))
    test_ranges[-1][1] = NO_UPPER_BOUND  # the coarsest level keeps everything above
    stride = max(8, int(round(chip_size / 16 / 8)) * 8)
    return ScaleSuggestion(
        scales=tuple(scales), valid_ranges=tuple(tuple(x) for x in ranges), chip_size=int(chip_size),
        chip_stride=stride, neg_min_proposals=tuple([25] + [10] * (len(scales) - 1)),
        test_scales=tuple(scales), test_valid_ranges=tuple(tuple(x) for x in test_ranges),
        band=(a_lo, a_hi), percentiles=(p_lo, p_hi), fractions=fractions, fit_scale=float(s_fit),
        warnings=tuple(warnings), explanation=tuple(explanation))


def object_levels(absolute, image_index, sizes_hw, suggestion):
    """Per object and level: valid there, and its scaled size there.

    Args:
        absolute (N,), image_index (N,): see :func:`object_sizes`. sizes_hw (M, 2): image sizes.
        suggestion (ScaleSuggestion).

    Returns:
        (valid (S, N) bool, scaled (S, N) float64 scaled pixels; FIT_SCALE resolved per image).
    """
    absolute = np.asarray(absolute, np.float64)
    long_side = np.asarray(sizes_hw, np.float64).reshape(-1, 2).max(axis=1)[np.asarray(image_index, np.int64)]
    valid, scaled = [], []
    for s, (lo, hi) in zip(suggestion.scales, suggestion.valid_ranges):
        factor = suggestion.chip_size / long_side if is_fit(s) else float(s)
        valid.append(_in_range(absolute, lo, hi))
        scaled.append(absolute * factor)
    return np.array(valid).reshape(-1, len(absolute)), np.array(scaled).reshape(-1, len(absolute))


# ------------------------------------------------------------------------------------------------
# Cost estimate
# ------------------------------------------------------------------------------------------------
# SNIPER "saves little" when its chips cost more than this fraction of the full pyramid's pixels.
SAVES_LITTLE_RATIO = 0.5


def _single_scale_pixels(sizes_hw, short=800, long=1333):
    h, w = sizes_hw[:, 0], sizes_hw[:, 1]
    f = np.minimum(short / np.minimum(h, w), long / np.maximum(h, w))
    return (h * f) * (w * f)


def single_scale_alternative(absolute, band):
    """The one resize factor that puts the median object in the middle of the band (log scale)."""
    return math.sqrt(band[0] * band[1]) / float(np.median(absolute))


def estimate_cost(records, suggestion, sample_images=200, seed=0, single_scale=None):
    """Training pixels per image, from planning a random sample of images with the real planner.

    The sample is planned for one epoch by :func:`sniper_d2.plans.build_plan` (positive chips: what
    training would see without negative chips).

    Args:
        records (list[dict]): see :func:`sniper_d2.coco.load_coco_records`.
        suggestion (ScaleSuggestion).
        sample_images (int), seed (int): the sample (and the planner's seed).
        single_scale (float or None): the single-scale alternative's factor (default:
            :func:`single_scale_alternative` of the sample's objects).

    Returns:
        dict with ``images`` (sample size), ``chips_per_image`` ((S,) mean positive chips per image
        per level), and mean pixels per image: ``sniper`` (chips x CHIP_SIZE^2), ``pyramid`` (the
        whole image at every level of the suggestion, FIT resolved per image), ``single_scale``
        (the whole image at ``single_scale_factor``), ``single_scale_original`` (H*W),
        ``single_scale_800`` (short side 800, long <= 1333); plus ``single_scale_factor``.
    """
    from .plans import PlanParams, build_plan

    rng = np.random.default_rng(seed)
    n = min(sample_images, len(records))
    pick = np.sort(rng.choice(len(records), n, replace=False)) if n < len(records) else np.arange(n)
    sample = [records[i] for i in pick]
    params = PlanParams(scales=tuple(suggestion.scales), valid_ranges=tuple(suggestion.valid_ranges),
                        chip_size=int(suggestion.chip_size), stride=int(suggestion.chip_stride))
    plan = build_plan(sample, params, epochs=1, seed=seed, progress=False)
    per_image = plan.chips_per_image(max(n, 1), len(suggestion.scales))[:, 0]
    sizes_hw = image_sizes(sample)
    area = sizes_hw[:, 0] * sizes_hw[:, 1]
    factors = np.stack([np.full(n, float(s)) if not is_fit(s) else suggestion.chip_size / sizes_hw.max(axis=1)
                        for s in suggestion.scales]) if n else np.zeros((len(suggestion.scales), 0))
    pyramid = (area[None] * factors ** 2).sum(axis=0)
    if single_scale is None:
        absolute = object_sizes(sample)[0]
        single_scale = single_scale_alternative(absolute, suggestion.band) if len(absolute) else 1.0
    mean = (lambda x: float(np.mean(x))) if n else (lambda x: 0.0)
    return {
        "images": int(n),
        "chips_per_image": per_image,
        "sniper": float(per_image.sum() * suggestion.chip_size ** 2),
        "pyramid": mean(pyramid),
        "single_scale": mean(area * single_scale ** 2),
        "single_scale_factor": float(single_scale),
        "single_scale_original": mean(area),
        "single_scale_800": mean(_single_scale_pixels(sizes_hw)) if n else 0.0,
    }


def saves_little(cost):
    """True when SNIPER's chips cost more than ``SAVES_LITTLE_RATIO`` of the pyramid's pixels."""
    return cost["pyramid"] > 0 and cost["sniper"] > SAVES_LITTLE_RATIO * cost["pyramid"]


def cost_report(cost, suggestion):
    """Lines comparing training pixels per image, ending with the one-line note when SNIPER saves little."""
    per_scale = ", ".join(f"{'fit' if is_fit(s) else f'{s:g}x'}: {c:.2f}"
                          for s, c in zip(suggestion.scales, cost["chips_per_image"]))
    sniper = cost["sniper"]
    lines = [f"positive chips per image per epoch (real planner, {cost['images']} images sampled): {per_scale}; "
             f"total {cost['chips_per_image'].sum():.2f}"]
    for name, key in (("full pyramid at these scales", "pyramid"),
                      (f"single scale {cost['single_scale_factor']:.3g}x (median object mid-band)", "single_scale"),
                      ("single scale, original size", "single_scale_original"),
                      ("single scale, short side 800 / long 1333", "single_scale_800")):
        ratio = sniper / cost[key] if cost[key] else float("nan")
        lines.append(f"training pixels per image: SNIPER {sniper / 1e6:.2f} MP vs {name} {cost[key] / 1e6:.2f} MP "
                     f"({ratio:.2f}x)")
    lines.append("(positive chips only; add SNIPER.NEG.CHIPS_PER_IMAGE x CHIP_SIZE^2 with negative chips)")
    if saves_little(cost):
        lines.append(f"NOTE: SNIPER saves little here: its chips cost {sniper / cost['pyramid']:.2f}x the full "
                     f"pyramid's pixels (objects are dense over most of each image at these scales); a single "
                     f"scale of {cost['single_scale_factor']:.3g}x costs {cost['single_scale'] / 1e6:.2f} MP per image.")
    return lines


# ------------------------------------------------------------------------------------------------
# Plot
# ------------------------------------------------------------------------------------------------
def plot_size_histogram(absolute, relative, suggestion, path, image_index=None, sizes_hw=None):
    """Save a PNG: object sizes with every valid range drawn as it is, and each object's scaled size
    at every level where it is valid against the band.

    Left: histogram of absolute sizes (log bins); one bar per level from its lower to its upper
    bound (an open bound runs to the axis edge and ends in an arrow). Middle: per level, the scaled
    sizes of the objects valid there (FIT resolved per image when ``image_index`` and ``sizes_hw``
    are given, else with the median image's factor), band shaded. Right: relative sizes.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .io import atomic_open

    absolute = np.asarray(absolute, np.float64)
    fig, (ax_abs, ax_scaled, ax_rel) = plt.subplots(1, 3, figsize=(19, 5))
    bounds = [v for r in suggestion.valid_ranges for v in r if v > 0]
    data_lo = max(float(absolute.min()), 0.5) if len(absolute) else 1.0
    data_hi = max(float(absolute.max()), data_lo * 2) if len(absolute) else 1000.0
    x_min, x_max = min([data_lo] + bounds) / 1.5, max([data_hi] + bounds) * 1.5
    ax_abs.hist(absolute, bins=np.geomspace(data_lo, data_hi, 60), color="0.5")
    ax_abs.set_xscale("log")
    ax_abs.set_xlim(x_min, x_max)
    ax_abs.set_xlabel("object size sqrt(w*h), original pixels")
    ax_abs.set_ylabel("objects")
    colors = plt.cm.viridis(np.linspace(0.05, 0.85, len(suggestion.scales)))
    top = ax_abs.get_ylim()[1]
    labels = ["fit" if is_fit(s) else f"{s:g}x" for s in suggestion.scales]
    for k, ((r_lo, r_hi), c, label) in enumerate(zip(suggestion.valid_ranges, colors, labels)):
        x0 = r_lo if r_lo > 0 else x_min
        x1 = x_max if r_hi == NO_UPPER_BOUND else r_hi
        y = top * (1.04 + 0.08 * k)
        ax_abs.plot([x0, x1], [y, y], color=c, lw=4, solid_capstyle="butt")
        if r_lo <= 0:
            ax_abs.plot([x0], [y], marker="<", color=c, ms=8)
        if r_hi == NO_UPPER_BOUND:
            ax_abs.plot([x1], [y], marker=">", color=c, ms=8)
        hi_text = "inf" if r_hi == NO_UPPER_BOUND else f"{r_hi:g}"
        ax_abs.text(x0 if r_lo > 0 else x_min * 1.1, y + top * 0.012, f"valid at {label}: [{r_lo:g}, {hi_text})",
                    color=c, fontsize=8, va="bottom")
        ax_abs.axvspan(x0, x1, color=c, alpha=0.05)
    ax_abs.set_ylim(0, top * (1.16 + 0.08 * len(suggestion.scales)))
    for p in suggestion.percentiles:
        ax_abs.axvline(p, color="k", ls="--", lw=0.8)
    ax_abs.set_title("sizes and valid ranges (dashed: low/high percentiles)")

    if image_index is None or sizes_hw is None:
        image_index = np.zeros(len(absolute), np.int64)
        sizes_hw = np.array([[suggestion.chip_size / max(suggestion.fit_scale, 1e-9)] * 2])
    valid, scaled = object_levels(absolute, image_index, sizes_hw, suggestion)
    rng = np.random.default_rng(0)
    ax_scaled.axvspan(suggestion.band[0], suggestion.band[1], color="tab:green", alpha=0.12, label="band")
    for k, (c, label) in enumerate(zip(colors, labels)):
        x = scaled[k][valid[k]]
        if len(x) > 4000:
            x = rng.choice(x, 4000, replace=False)
        ax_scaled.scatter(x, k + rng.uniform(-0.3, 0.3, len(x)), s=3, color=c, alpha=0.5)
        outside = ((scaled[k] < suggestion.band[0]) | (scaled[k] > suggestion.band[1]))[valid[k]].mean() \
            if valid[k].any() else 0.0
        ax_scaled.text(0.01, k + 0.34, f"{label}: {valid[k].sum()} valid, {100 * outside:.0f}% outside the band",
                       fontsize=8, color=c, transform=ax_scaled.get_yaxis_transform())
    ax_scaled.set_xscale("log")
    finite = scaled[valid] if valid.any() else np.array(suggestion.band)
    ax_scaled.set_xlim(min(finite.min(), suggestion.band[0]) / 1.5, max(finite.max(), suggestion.band[1]) * 1.5)
    ax_scaled.set_yticks(range(len(labels)))
    ax_scaled.set_yticklabels(labels)
    ax_scaled.set_ylim(-0.6, len(labels) - 0.2)
    ax_scaled.set_xlabel("scaled object size, pixels the network sees")
    ax_scaled.set_title(f"each valid object's scaled size vs the band [{suggestion.band[0]:g}, {suggestion.band[1]:g}]")
    ax_rel.hist(relative, bins=60, color="0.5")
    ax_rel.set_xlabel("relative size sqrt(w*h) / sqrt(H*W)")
    ax_rel.set_title("relative size")
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------
# Reading a detectron2 yaml without detectron2
# ------------------------------------------------------------------------------------------------
def read_config_yaml(path, _seen=None):
    """A detectron2 yaml config as a nested dict, ``_BASE_`` chains merged (child wins). PyYAML only.

    The statistics tool runs without torch, so it cannot use :func:`sniper_d2.cli.setup_cfg`
    (detectron2's ``CfgNode`` imports torch); it shares its file check and error types
    (``FileNotFoundError``, :class:`~sniper_d2.config.ConfigError`) and reads keys without defaults.
    """
    import yaml

    path = os.path.abspath(os.fspath(path))
    seen = set() if _seen is None else _seen
    if path in seen:
        raise ConfigError(f"{path}: _BASE_ chain loops back to this file")
    seen.add(path)
    require_config_file(path)
    with open(path) as f:
        try:
            data = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from e
    base = data.pop("_BASE_", None)
    if base is None:
        return data
    base_path = base if os.path.isabs(base) else os.path.join(os.path.dirname(path), base)
    return _merge(read_config_yaml(base_path, seen), data)


def _merge(base, child):
    out = dict(base)
    for k, v in child.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def config_value(cfg_dict, dotted_key, default=None):
    """``cfg_dict["A"]["B"]`` for ``"A.B"``; strings such as ``"(1, 2)"`` are literal-evaluated."""
    node = cfg_dict
    for part in dotted_key.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    if isinstance(node, str):
        try:
            return ast.literal_eval(node)
        except (ValueError, SyntaxError):
            return node
    return node
