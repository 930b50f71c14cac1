"""The SNIPER settings a data set's object sizes call for. Numpy only.

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

The cost of the result is estimated by :mod:`sniper_d2.stats.cost`, and drawn by
:mod:`sniper_d2.stats.plot`.
"""

import math
from dataclasses import dataclass

import numpy as np

from ..chips import resolve_scale
from ..coco import DatasetError
from ..config_types import FIT_SCALE, NO_UPPER_BOUND, ValidRange

__all__ = ["DEFAULT_ANCHOR_SIZES", "comfortable_band", "ScaleSuggestion", "suggest_sniper_params", "object_levels"]

# detectron2's default MODEL.ANCHOR_GENERATOR.SIZES for FPN models, flattened.
DEFAULT_ANCHOR_SIZES = (32, 64, 128, 256, 512)


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
    """Derived SNIPER settings (config units: see :mod:`sniper_d2.config` and :mod:`sniper_d2.config_types`).

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

    @property
    def ranges(self):
        """tuple[ValidRange]: :attr:`valid_ranges` decoded (hi ``math.inf`` for no upper bound)."""
        return tuple(ValidRange.parse(r) for r in self.valid_ranges)

    def scale_at(self, k, image_size):
        """The resize factor of level ``k`` for an image of (height, width)
        (:func:`sniper_d2.chips.resolve_scale`)."""
        return resolve_scale(self.scales[k], image_size, self.chip_size)


def _num(v):
    return f"{float(v):.1f}" if float(v) == round(float(v), 1) else f"{float(v):.4g}"


def _round_sig(x, digits=3):
    return float(f"{x:.{digits}g}")


def _ceil_sig(x, digits=3):
    """``x`` rounded up to ``digits`` significant digits."""
    unit = 10.0 ** (math.floor(math.log10(x)) - digits + 1)
    return float(f"{math.ceil(x / unit - 1e-9) * unit:.{digits}g}")


def _in_range(x, lo, hi):
    """(N,) bool: ``lo <= x < hi`` (a valid training size), hi = -1 for no upper bound."""
    return ValidRange.parse((lo, hi)).train_mask(x)


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
    hw = np.asarray(sizes_hw, np.float64).reshape(-1, 2)[np.asarray(image_index, np.int64)]
    valid, scaled = [], []
    for s, valid_range in zip(suggestion.scales, suggestion.ranges):
        valid.append(valid_range.train_mask(absolute))
        scaled.append(absolute * resolve_scale(s, (hw[:, 0], hw[:, 1]), suggestion.chip_size))
    return np.array(valid).reshape(-1, len(absolute)), np.array(scaled).reshape(-1, len(absolute))
