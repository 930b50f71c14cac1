"""Object size statistics of a data set, and the SNIPER settings they call for. Numpy only.

One job per module, in the order the statistics tool (tools/compute_scale_stats.py) runs them:

* :mod:`~sniper_d2.stats.sizes`: object sizes ``sqrt(w * h)`` in original-image pixels, image sizes;
* :mod:`~sniper_d2.stats.derivation`: the rule from sizes and anchors to scales, valid ranges, chip
  size and stride (:func:`suggest_sniper_params`, documented step by step there);
* :mod:`~sniper_d2.stats.cost`: training pixels per image, SNIPER against a full pyramid and a
  single scale, from the real planner (:func:`estimate_cost`, :func:`cost_report`);
* :mod:`~sniper_d2.stats.plot`: the figure (matplotlib, imported when drawing).

Config files are read with :func:`sniper_d2.config_files.read_config_yaml` (fvcore, no torch).
"""

from .cost import SAVES_LITTLE_RATIO, cost_report, estimate_cost, saves_little, single_scale_alternative
from .derivation import DEFAULT_ANCHOR_SIZES, ScaleSuggestion, comfortable_band, object_levels, suggest_sniper_params
from .plot import plot_size_histogram
from .sizes import image_sizes, object_sizes, size_summary

__all__ = ["object_sizes", "image_sizes", "size_summary", "comfortable_band", "ScaleSuggestion",
           "suggest_sniper_params", "object_levels", "single_scale_alternative", "estimate_cost",
           "saves_little", "cost_report", "plot_size_histogram", "DEFAULT_ANCHOR_SIZES", "SAVES_LITTLE_RATIO"]
