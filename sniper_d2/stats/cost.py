"""What SNIPER's chips cost against a full pyramid and single-scale training. Numpy only.

:func:`estimate_cost` plans a sample of images with the real planner (:func:`sniper_d2.plans.build_plan`,
one epoch) and compares SNIPER's chip pixels per image with the full pyramid at the same scales and
with the single-scale alternative that puts the median object in the middle of the band;
:func:`cost_report` says in one line when SNIPER saves little (dense objects in one size band).
"""

import math

import numpy as np

from ..chips import resolve_scale
from ..config_types import scale_label
from .sizes import image_sizes, object_sizes

__all__ = ["SAVES_LITTLE_RATIO", "single_scale_alternative", "estimate_cost", "saves_little", "cost_report"]

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
    from ..plans import PlanParams, build_plan

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
    factors = np.stack([np.broadcast_to(resolve_scale(s, (sizes_hw[:, 0], sizes_hw[:, 1]), suggestion.chip_size), n)
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
    per_scale = ", ".join(f"{scale_label(s)}: {c:.2f}"
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
