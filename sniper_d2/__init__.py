"""sniper_d2: SNIPER (efficient multi-scale training by chips) for detectron2.

Importing this package (and :mod:`sniper_d2.chips`, :mod:`sniper_d2.stats`) needs only numpy;
the torch/detectron2 parts live in submodules that import them themselves.
"""

__version__ = "0.1.0"
