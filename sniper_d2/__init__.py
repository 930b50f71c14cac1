"""sniper_d2: SNIPER (efficient multi-scale training by chips) for detectron2.

The public API (docs/ARCHITECTURE.md) is importable from the package itself, e.g.
``from sniper_d2 import PlanParams, build_plan, SniperDatasetMapper``. Importing the package needs
only numpy: each name is imported from its submodule on first use (PEP 562 ``__getattr__``), so the
torch/detectron2 parts (mapper, heads, inference, evaluation) load only when asked for.
"""

import importlib

__version__ = "0.1.0"

# public name -> submodule that defines it
_API = {
    # numpy only
    "add_sniper_config": "config", "ConfigError": "config_types", "ValidRange": "config_types",
    "is_fit": "config_types", "parse_scales": "config_types", "FIT_SCALE": "config_types",
    "NO_UPPER_BOUND": "config_types",
    "load_coco_records": "coco", "non_crowd_boxes": "coco", "DatasetError": "coco",
    "atomic_open": "io", "save_json_artifact": "io", "load_json_artifact": "io", "save_npz_artifact": "io",
    "load_npz_artifact": "io", "stable_hash": "io", "ArtifactError": "io",
    "resolve_scale": "chips", "positive_chips": "chips", "negative_chips": "chips",
    "batch_positive_chips": "chips", "batch_negative_chips": "chips",
    "PlanParams": "plans", "ChipPlan": "plans", "build_plan": "plans", "save_plan": "plans", "load_plan": "plans",
    "load_or_build_plan": "plans", "merge_plans": "plans",
    "suggest_sniper_params": "stats",
    "setup_cfg": "cli", "run_cli": "cli", "run_main": "cli",
    "crop_and_scale": "geometry", "warp_to_chip": "geometry", "tile_windows": "geometry",
    "touches_inner_border": "geometry",
    "read_image": "image_io", "read_image_region": "image_io", "read_image_size": "image_io",
    "ImageReadError": "image_io",
    # torch / detectron2
    "SniperDatasetMapper": "data.mapper", "load_or_build_plan_distributed": "data.plan_sharing",
    "SniperRPN": "modeling", "SniperROIHeads": "modeling", "SniperFocusRCNN": "modeling", "focus_labels": "modeling",
    "focus_chips": "inference.autofocus", "autofocus_predict": "inference.autofocus",
    "merge_detections": "inference", "MultiScaleTiledPredictor": "inference", "TiledInferenceParams": "inference",
    "SniperCOCOEvaluator": "inference.evaluation", "build_sniper_evaluator": "inference.evaluation",
    "sniper_inference_model": "inference.evaluation",
}

__all__ = sorted(_API)


def __getattr__(name):
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'sniper_d2' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(_API))
