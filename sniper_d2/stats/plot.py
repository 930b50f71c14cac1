"""A figure of a data set's object sizes against a :class:`~sniper_d2.stats.ScaleSuggestion`.

matplotlib is imported when a figure is drawn (it is an optional dependency).
"""

import math

import numpy as np

from ..config_types import scale_label
from ..io import atomic_open
from .derivation import object_levels

__all__ = ["plot_size_histogram"]


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

    absolute = np.asarray(absolute, np.float64)
    fig, (ax_abs, ax_scaled, ax_rel) = plt.subplots(1, 3, figsize=(19, 5))
    bounds = [v for r in suggestion.ranges for v in r if 0 < v < math.inf]
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
    labels = [scale_label(s) for s in suggestion.scales]
    for k, ((r_lo, r_hi), c, label) in enumerate(zip(suggestion.ranges, colors, labels)):
        x0 = r_lo if r_lo > 0 else x_min
        x1 = min(x_max, r_hi)
        y = top * (1.04 + 0.08 * k)
        ax_abs.plot([x0, x1], [y, y], color=c, lw=4, solid_capstyle="butt")
        if r_lo <= 0:
            ax_abs.plot([x0], [y], marker="<", color=c, ms=8)
        if math.isinf(r_hi):
            ax_abs.plot([x1], [y], marker=">", color=c, ms=8)
        hi_text = f"{r_hi:g}"
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
