"""Object size statistics of a data set, and the SNIPER settings they call for. Numpy only.

Sizes are ``sqrt(w * h)`` of boxes in original-image pixels ("absolute"), and that divided by
``sqrt(H * W)`` of the image ("relative"). Crowd boxes are left out.

How the settings are derived (:func:`suggest_sniper_params`):

1. The detector's *comfortable* object size band, in pixels of the image it sees, is
   ``[a_lo, a_hi] = [smallest anchor, min(largest anchor, CHIP_SIZE / 2)]``: objects smaller than
   the smallest anchor are hard to match, and objects over half a chip are often cut by chip
   borders. Anchor sizes come from the config (``MODEL.ANCHOR_GENERATOR.SIZES``) unless given.
2. The finest scale brings the small objects (the ``low_percentile`` of sizes, default 2 %) up to
   ``a_lo``: ``s_1 = a_lo / p_low``, capped at ``max_scale`` (upsampling beyond ~4x adds pixels,
   not detail).
3. The coarsest level is ``FIT_SCALE`` (-1): the whole image resized to ``CHIP_SIZE`` on its long
   side, one chip per image, for the largest objects. For the median image its factor is
   ``s_fit = CHIP_SIZE / median long side``.
4. Between them, fixed scales are spaced geometrically, ``s_k = s_1 / r^k``, with the smallest
   number of steps such that ``r <= sqrt(a_hi / a_lo)``: each step shifts the band by at most half
   its (log) width, so neighbouring valid ranges overlap by about half and every object is valid at
   one or two scales. When ``s_1 < 1.25 s_fit`` there is no fixed scale: ``FIT_SCALE`` alone, [0, inf).
5. Scale ``s`` is valid for objects of original size ``[a_lo / s, a_hi / s)``; the finest scale
   starts at 0 (tiny objects still have nowhere better to go) and ``FIT_SCALE`` is open above
   (``-1``), starting at ``a_lo / s_fit``.
6. ``CHIP_STRIDE`` = ``CHIP_SIZE / 16`` (rounded to a multiple of 8); ``NEG.MIN_PROPOSALS`` = 25 at
   the finest scale and 10 elsewhere (original SNIPER); test scales are the training scales and test
   ranges the training ranges shifted down, ``(0.8 lo, 0.7 hi)``: an object near the top of a
   scale's range is nearly chip-sized there and seldom whole in a training chip, so the next coarser
   scale, which saw it comfortably, should detect it; that scale in turn reaches a little below its
   training range. (The original SNIPER widened both ends; on the synthetic demo set, widening the
   upper end cost 13 AP_large points against this rule; see docs/planning.md.)

:func:`estimate_cost` runs the planner on a sample of images to count chips per image, and compares
training pixels per image with single-scale training (at the original size, and detectron2's
default 800 / 1333 resize) and with a full image pyramid at the same scales.
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
           "suggest_sniper_params", "estimate_cost", "plot_size_histogram", "read_config_yaml",
           "config_value", "DEFAULT_ANCHOR_SIZES"]

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
        scales (tuple[float]): resize factors, finest first, ending with FIT_SCALE (-1).
        valid_ranges (tuple[tuple[float, float]]): per scale (lo, hi) on sqrt(w*h) in original px,
            hi = -1 for no upper bound.
        chip_size, chip_stride (int): scaled pixels.
        neg_min_proposals (tuple[int]): per scale.
        test_scales, test_valid_ranges: for ``SNIPER.TEST``.
        band (tuple[float, float]): the comfortable band in scaled pixels it was derived from.
        percentiles (tuple[float, float]): the low / high size percentiles used, original px.
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

    def to_yaml(self):
        """A ``SNIPER:`` fragment for a detectron2 yaml config (keys as in sniper_d2/config.py)."""
        def seq(values):
            return "[" + ", ".join(_num(v) for v in values) + "]"

        def ranges(rs):
            return "[" + ", ".join(seq(r) for r in rs) + "]"

        return "\n".join([
            "SNIPER:",
            f"  SCALES: {seq(self.scales)}",
            f"  VALID_RANGES: {ranges(self.valid_ranges)}",
            f"  CHIP_SIZE: {int(self.chip_size)}",
            f"  CHIP_STRIDE: {int(self.chip_stride)}",
            "  NEG:",
            f"    MIN_PROPOSALS: [{', '.join(str(int(m)) for m in self.neg_min_proposals)}]",
            "  TEST:",
            f"    SCALES: {seq(self.test_scales)}",
            f"    VALID_RANGES: {ranges(self.test_valid_ranges)}",
        ]) + "\n"


def _num(v):
    return f"{float(v):.1f}" if float(v) == round(float(v), 1) else f"{float(v):.4g}"


def _round_sig(x, digits=3):
    return float(f"{x:.{digits}g}")


def suggest_sniper_params(absolute, sizes_hw, anchor_sizes=DEFAULT_ANCHOR_SIZES, chip_size=512,
                          low_percentile=2.0, max_scale=4.0, test_factors=(0.8, 0.7)):
    """Derive SNIPER scales, valid ranges, chip size and stride (see the module docstring).

    Args:
        absolute: (N,) object sizes sqrt(w*h), original pixels.
        sizes_hw: (M, 2) image (height, width), pixels.
        anchor_sizes: the RPN anchor sizes (nested lists allowed), scaled pixels.
        chip_size (int): chip side, scaled pixels.
        low_percentile (float): size percentile brought up to the smallest anchor by the finest scale.
        max_scale (float): largest resize factor allowed.
        test_factors (tuple[float, float]): factors applied to (lo, hi) of the training ranges to
            give the test ranges (an upper bound is never lowered below the next scale's test lower
            bound, so every size stays covered).

    Returns:
        ScaleSuggestion
    """
    absolute = np.asarray(absolute, np.float64)
    absolute = absolute[np.isfinite(absolute) & (absolute > 0)]
    if len(absolute) == 0:
        raise DatasetError("the data set has no (non-crowd, non-empty) boxes: nothing to derive scales from")
    a_lo, a_hi = comfortable_band(anchor_sizes, chip_size)
    p_low = float(np.percentile(absolute, low_percentile))
    p_high = float(np.percentile(absolute, 100 - low_percentile))
    long_side = float(np.median(np.asarray(sizes_hw, np.float64).reshape(-1, 2).max(axis=1)))
    s_fit = chip_size / long_side
    s_1 = min(max_scale, a_lo / p_low)
    r_max = math.sqrt(a_hi / a_lo)
    # No fixed scale within 1.25x of the fit scale: the whole-image level already serves it.
    steps = max(0, math.ceil(math.log(s_1 / s_fit) / math.log(r_max) - 1e-9)) if s_1 > 1.25 * s_fit else 0
    r = (s_1 / s_fit) ** (1.0 / steps) if steps else 1.0
    fixed = [_round_sig(s_1 / r ** k) for k in range(steps)]

    scales = tuple(fixed) + (FIT_SCALE,)
    ranges = [[_round_sig(a_lo / s), _round_sig(a_hi / s)] for s in fixed]
    ranges.append([_round_sig(a_lo / s_fit), NO_UPPER_BOUND])
    ranges[0][0] = 0.0
    test_ranges = [[_round_sig(lo * test_factors[0]), hi] for lo, hi in ranges]
    for k in range(len(test_ranges) - 1):  # the last (open) range keeps hi = NO_UPPER_BOUND
        next_lo = test_ranges[k + 1][0]
        test_ranges[k][1] = max(_round_sig(ranges[k][1] * test_factors[1]), _round_sig(next_lo * 1.25))
    stride = max(8, int(round(chip_size / 16 / 8)) * 8)
    return ScaleSuggestion(
        scales=scales, valid_ranges=tuple(tuple(x) for x in ranges), chip_size=int(chip_size),
        chip_stride=stride, neg_min_proposals=tuple([25] + [10] * (len(scales) - 1)),
        test_scales=scales, test_valid_ranges=tuple(tuple(x) for x in test_ranges),
        band=(a_lo, a_hi), percentiles=(p_low, p_high))


# ------------------------------------------------------------------------------------------------
# Cost estimate
# ------------------------------------------------------------------------------------------------
def _single_scale_pixels(sizes_hw, short=800, long=1333):
    h, w = sizes_hw[:, 0], sizes_hw[:, 1]
    f = np.minimum(short / np.minimum(h, w), long / np.maximum(h, w))
    return (h * f) * (w * f)


def estimate_cost(records, suggestion, sample_images=200, seed=0):
    """Chips per image and training pixels per image, on a random sample of images (one epoch).

    Returns:
        dict with ``chips_per_image`` ((S,) mean positive chips per image per scale), ``images``
        (sample size), and per-image mean pixels: ``sniper`` (chips x CHIP_SIZE^2),
        ``single_scale_original`` (H*W), ``single_scale_800`` (short side 800, long <= 1333),
        ``pyramid`` (the full images at every fixed scale, plus the FIT level).
    """
    from .chips import positive_chips, resolve_scale

    rng = np.random.default_rng(seed)
    n = min(sample_images, len(records))
    pick = np.sort(rng.choice(len(records), n, replace=False)) if n < len(records) else np.arange(n)
    chips = np.zeros(len(suggestion.scales))
    for i in pick:
        r = records[i]
        size = (r["height"], r["width"])
        boxes = non_crowd_boxes(r)
        for s, (entry, vr) in enumerate(zip(suggestion.scales, suggestion.valid_ranges)):
            scale = resolve_scale(entry, size, suggestion.chip_size)
            chips[s] += len(positive_chips(boxes, size, scale, vr, suggestion.chip_size,
                                           suggestion.chip_stride, seed=[seed, int(i), s]))
    sizes_hw = image_sizes([records[i] for i in pick])
    area = sizes_hw[:, 0] * sizes_hw[:, 1]
    fixed = np.array([s for s in suggestion.scales if not is_fit(s)])
    has_fit = any(is_fit(s) for s in suggestion.scales)
    pyramid = area * float((fixed ** 2).sum())
    if has_fit:
        pyramid = pyramid + area * (suggestion.chip_size / sizes_hw.max(axis=1)) ** 2
    per_image = chips / max(n, 1)
    return {
        "images": int(n),
        "chips_per_image": per_image,
        "sniper": float(per_image.sum() * suggestion.chip_size ** 2),
        "single_scale_original": float(area.mean()) if n else 0.0,
        "single_scale_800": float(_single_scale_pixels(sizes_hw).mean()) if n else 0.0,
        "pyramid": float(pyramid.mean()) if n else 0.0,
    }


# ------------------------------------------------------------------------------------------------
# Plot
# ------------------------------------------------------------------------------------------------
def plot_size_histogram(absolute, relative, suggestion, path):
    """Save a PNG: histograms of absolute (log bins) and relative sizes, valid ranges drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .io import atomic_open

    fig, (ax_abs, ax_rel) = plt.subplots(1, 2, figsize=(13, 4.5))
    lo = max(float(absolute.min()), 0.5) if len(absolute) else 1.0
    hi = max(float(absolute.max()), lo * 2) if len(absolute) else 1000.0
    ax_abs.hist(absolute, bins=np.geomspace(lo, hi, 60), color="0.5")
    ax_abs.set_xscale("log")
    ax_abs.set_xlabel("object size sqrt(w*h), original pixels")
    ax_abs.set_ylabel("objects")
    colors = plt.cm.viridis(np.linspace(0.05, 0.85, len(suggestion.scales)))
    top = ax_abs.get_ylim()[1]
    for k, (scale, (r_lo, r_hi), c) in enumerate(zip(suggestion.scales, suggestion.valid_ranges, colors)):
        x0 = max(r_lo, lo * 0.9)
        x1 = hi * 1.1 if r_hi == NO_UPPER_BOUND else r_hi
        label = "fit" if is_fit(scale) else f"{scale:g}x"
        y = top * (1.02 + 0.06 * k)
        ax_abs.plot([x0, x1], [y, y], color=c, lw=4, solid_capstyle="butt")
        ax_abs.text(x0, y + top * 0.01, f"valid at {label}", color=c, fontsize=8, va="bottom")
        ax_abs.axvspan(x0, x1, color=c, alpha=0.06)
    ax_abs.set_ylim(0, top * (1.12 + 0.06 * len(suggestion.scales)))
    for p in suggestion.percentiles:
        ax_abs.axvline(p, color="k", ls="--", lw=0.8)
    ax_abs.set_title("absolute size, SNIPER valid ranges (dashed: low/high percentiles)")
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
