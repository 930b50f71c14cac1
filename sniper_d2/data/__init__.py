"""Data (training side): data set registration, chip training stream and its mapper.

Submodules import torch/detectron2; import what you need from them directly, e.g.
``from sniper_d2.data.mapper import SniperDatasetMapper``.
"""
