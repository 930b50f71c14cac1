"""Which config to train first, SNIPER or plain slicing, from the data's traits and measured figures.

Numpy only. :func:`data_traits` measures what decides between the two (on a sample of the images):

- **size spread**: the fraction of the objects that plain slicing, at its one scale (the median
  object mid-band), puts inside the detector's band. Below :data:`ONE_BAND_FRACTION` the sizes
  spread over more than one band: slicing trains the rest too small or too large, while SNIPER
  trains every object at a scale where it fits.
- **background**: the fraction of slicing's tiles holding no object (centre). Slicing trains every
  tile, so a high fraction spends most of its chips on background; SNIPER trains chips on objects
  plus a few mined negative chips.
- **image vs chip**: slicing tiles per image. One tile per image is whole-image training.

:func:`recommend` places the data in one of two *cases* (:func:`data_case`: ``"multi-band"``
or ``"one band"``) and recommends the method that scored the higher mean AP on the benchmarked data
set of the same case (``benchmarks/bench_accuracy.py`` writes, per data set, its traits, its case
and each method's AP over seeds: the ``by_dataset`` figures of ``benchmarks/results/bench_accuracy.json``),
quoting mean +- std. Without a measured data set of that case, it says so and falls back on the
traits alone.
"""

import numpy as np

__all__ = ["ONE_BAND_FRACTION", "BACKGROUND_HEAVY", "data_traits", "data_case", "recommend"]

# Slicing at one scale serves the data when at least this fraction of the objects is in the band there.
ONE_BAND_FRACTION = 0.9
# Above this fraction of background tiles, slicing spends most of its training on background.
BACKGROUND_HEAVY = 0.5
METHOD_CONFIG = {"sniper": "sniper.yaml", "sliced": "sliced.yaml", "baseline": "baseline.yaml"}


def data_traits(records, band, slice_scale, chip_size, overlap, sample_images=200, seed=0):
    """What decides between SNIPER and slicing, measured on a sample of the images.

    Args:
        records (list[dict]): see :func:`sniper_d2.coco.load_coco_records` (``boxes`` (N, 4) XYXY
            original pixels; crowd boxes left out here).
        band (tuple[float, float]): the detector's band (a_lo, a_hi), scaled pixels.
        slice_scale (float): slicing's resize factor. chip_size (int): tile side, scaled pixels.
        overlap (float): tiles' overlap, fraction of ``chip_size``.
        sample_images (int), seed (int): the sample of images measured.

    Returns:
        dict: ``in_band_fraction`` (objects whose scaled size sqrt(w*h) * slice_scale is inside the
        band), ``size_spread`` (98th / 2nd percentile of object sizes), ``band_width`` (a_hi / a_lo),
        ``background_tile_fraction`` (slicing tiles without an object centre), ``tiles_per_image``,
        ``objects_per_tile`` (mean over tiles with objects), ``images`` (sample size).
    """
    from .coco import non_crowd_boxes
    from .config_types import ValidRange
    from .plans import PlanParams, slice_images

    rng = np.random.default_rng(seed)
    n = min(int(sample_images), len(records))
    pick = np.sort(rng.choice(len(records), n, replace=False)) if n < len(records) else np.arange(n)
    boxes = [np.asarray(non_crowd_boxes(records[i]), np.float64).reshape(-1, 4) for i in pick]
    params = PlanParams(scales=(float(slice_scale),), valid_ranges=(ValidRange(0.0),), chip_size=int(chip_size),
                        stride=max(8, int(chip_size) // 16), mode="sliced", slice_overlap=float(overlap))
    jobs = [((records[i]["height"], records[i]["width"]), b, k, None) for k, (i, b) in enumerate(zip(pick, boxes))]
    tiles = slice_images(jobs, params, epochs=1) if n else {"chips": np.zeros((0, 4)), "image_index": np.zeros(0)}
    chips, owner = np.asarray(tiles["chips"], np.float64), np.asarray(tiles["image_index"], np.int64)
    counts = np.zeros(len(chips), np.int64)
    for k, b in enumerate(boxes):  # per image: a (tiles x boxes) test of the image's own tiles
        at = np.flatnonzero(owner == k)
        if len(b) and len(at):
            cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
            c = chips[at]
            counts[at] = ((cx[None] >= c[:, :1]) & (cx[None] < c[:, 2:3]) &
                          (cy[None] >= c[:, 1:2]) & (cy[None] < c[:, 3:4])).sum(axis=1)
    sizes = np.concatenate([np.sqrt(np.prod(b[:, 2:] - b[:, :2], axis=1)) for b in boxes] + [np.zeros(0)])
    scaled = sizes * float(slice_scale)
    p_lo, p_hi = (np.percentile(sizes, [2, 98]) if len(sizes) else (1.0, 1.0))
    return {"in_band_fraction": float(((scaled >= band[0]) & (scaled <= band[1])).mean()) if len(sizes) else 1.0,
            "size_spread": float(p_hi / max(p_lo, 1e-9)), "band_width": float(band[1] / band[0]),
            "background_tile_fraction": float((counts == 0).mean()) if len(counts) else 0.0,
            "tiles_per_image": float(len(chips) / max(n, 1)),
            "objects_per_tile": float(counts[counts > 0].mean()) if (counts > 0).any() else 0.0,
            "images": int(n)}


def data_case(traits):
    """``"one band"`` when slicing's one scale puts at least :data:`ONE_BAND_FRACTION` of the objects
    in the band, else ``"multi-band"``."""
    return "one band" if traits["in_band_fraction"] >= ONE_BAND_FRACTION else "multi-band"


def _trait_lines(traits):
    return [f"{100 * traits['in_band_fraction']:.0f}% of the objects are in the band at slicing's one scale "
            f"(sizes span {traits['size_spread']:.1f}x between the 2nd and 98th percentile; the band is "
            f"{traits['band_width']:.1f}x wide)",
            f"{100 * traits['background_tile_fraction']:.0f}% of slicing's {traits['tiles_per_image']:.1f} tiles per "
            f"image hold no object; those with objects hold {traits['objects_per_tile']:.1f} on average"]


def _fmt(entry):
    return f"{entry['mean']:.1f} +- {entry['std']:.1f} AP (n={entry['n']})"


def recommend(traits, measured=None):
    """Lines saying which config to train first and why.

    Args:
        traits (dict): :func:`data_traits` of the user's data.
        measured (dict or None): benchmarked data sets, name -> ``{"case": str, "AP": {method:
            {"mean", "std", "n"}}}`` (``by_dataset`` of ``bench_accuracy.json``); None: none known.

    Returns:
        (method str: ``"sniper"`` or ``"sliced"``, lines list[str]).
    """
    case = data_case(traits)
    lines = [f"these data look {case}: " + _trait_lines(traits)[0], _trait_lines(traits)[1]]
    same = {name: m for name, m in (measured or {}).items()
            if m.get("case") == case and {"sniper", "sliced"} <= set(m.get("AP", {}))}
    if same:
        votes = {}
        for name, m in sorted(same.items()):
            ap = m["AP"]
            winner = "sniper" if ap["sniper"]["mean"] >= ap["sliced"]["mean"] else "sliced"
            votes[winner] = votes.get(winner, 0) + 1
            close = abs(ap["sniper"]["mean"] - ap["sliced"]["mean"]) <= max(ap["sniper"]["std"], ap["sliced"]["std"])
            lines.append(f"measured on the {case} set '{name}' (benchmarks/bench_accuracy.py): SNIPER "
                         f"{_fmt(ap['sniper'])}, sliced {_fmt(ap['sliced'])}"
                         + (f", baseline {_fmt(ap['baseline'])}" if "baseline" in ap else "")
                         + (" (within one std: close)" if close else ""))
        method = max(sorted(votes), key=votes.get)
        lines.append(f"train {METHOD_CONFIG[method]} first: {'SNIPER' if method == 'sniper' else 'slicing'} "
                     f"won on the measured data of this case")
        return method, lines
    lines.append(f"no benchmarked data set of the {case} case: the recommendation follows the traits alone")
    if case == "multi-band":
        method, why = "sniper", ("slicing at one scale trains the objects outside the band at a size the "
                                 "detector fits badly")
    elif traits["background_tile_fraction"] > BACKGROUND_HEAVY:
        method, why = "sniper", "slicing would spend most of its chips on background tiles"
    else:
        method, why = "sliced", "one band and objects in most tiles: SNIPER's chips are nearly slicing's tiles"
    lines.append(f"train {METHOD_CONFIG[method]} first: {why}")
    return method, lines
