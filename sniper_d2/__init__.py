"""sniper_d2: SNIPER (efficient multi-scale training by chips) for detectron2.

The public API (docs/api.md, one line per name) is importable from the package itself, e.g.
``from sniper_d2 import PlanParams, build_plan, SniperDatasetMapper``. Importing the package needs
only numpy: each name is imported from its submodule on first use (PEP 562 ``__getattr__``), so the
torch/detectron2 parts (mapper, heads, inference, evaluation) load only when asked for.
"""

import importlib

__version__ = "0.1.0"

# public name -> submodule that defines it; docs/api.md describes each (tests/test_layout.py checks
# both directions)
_API = {
    # numpy only: configuration
    "add_sniper_config": "config",
    "ConfigError": "config_types", "ValidRange": "config_types", "is_fit": "config_types",
    "scale_label": "config_types", "parse_scales": "config_types", "FIT_SCALE": "config_types",
    "NO_UPPER_BOUND": "config_types",
    "read_config_yaml": "config_files", "config_value": "config_files",
    "check_runtime_config": "config_checks",
    "setup_cfg": "cli", "run_cli": "cli", "run_main": "cli",
    "default_setup": "preflight",  # (preflight() itself: sniper_d2.preflight.preflight, the module's name)
    # numpy only: data, artifacts, planning, statistics
    "load_coco_records": "coco", "non_crowd_boxes": "coco", "crowd_flags": "coco", "DatasetError": "coco",
    "atomic_open": "io", "save_json_artifact": "io", "load_json_artifact": "io", "save_npz_artifact": "io",
    "load_npz_artifact": "io", "stable_hash": "io", "ArtifactError": "io",
    "resolve_scale": "chips", "positive_chips": "chips", "negative_chips": "chips",
    "batch_positive_chips": "chips", "batch_negative_chips": "chips",
    "PlanParams": "plans", "ChipPlan": "plans", "build_plan": "plans", "save_plan": "plans", "load_plan": "plans",
    "load_or_build_plan": "plans", "merge_plans": "plans", "dataset_hash": "plans",
    "object_sizes": "stats", "image_sizes": "stats", "suggest_sniper_params": "stats",
    "ScaleSuggestion": "stats", "estimate_cost": "stats", "cost_report": "stats",
    "plot_size_histogram": "stats",
    "write_configs": "config_writer",
    # numpy + OpenCV / Pillow: pixels
    "scaled_length": "geometry", "scaled_size": "geometry", "chip_content_size": "geometry",
    "chip_content_extent": "geometry", "crop_and_scale": "geometry", "warp_to_chip": "geometry",
    "axis_starts": "geometry", "tile_windows": "geometry", "touches_inner_border": "geometry",
    "read_image": "image_io", "read_image_region": "image_io", "read_image_size": "image_io",
    "open_image": "image_io", "read_chip": "image_io", "ImageReadError": "image_io",
    # torch / detectron2: training
    "SniperDatasetMapper": "data.mapper", "load_or_build_plan_distributed": "data.plan_sharing",
    "SniperRPN": "modeling", "SniperROIHeads": "modeling", "SniperFocusRCNN": "modeling", "focus_labels": "modeling",
    # torch / detectron2: inference
    "merge_detections": "inference", "MultiScaleTiledPredictor": "inference", "TiledInferenceParams": "inference",
    "Tile": "inference.predictor", "tile_batches": "inference.predictor",
    "ImageTask": "inference.pipeline", "build_tile_loader": "inference.pipeline",
    "run_tiled_inference": "inference.pipeline",
    "infer_files": "inference.folder", "draw_detections": "inference.folder",
    "load_partial_results": "inference.folder",
    "focus_chips": "inference.autofocus", "autofocus_predict": "inference.autofocus",
    "focus_components": "inference.autofocus", "grow_boxes": "inference.autofocus",
    "merge_overlapping": "inference.autofocus", "stitch_focus_map": "inference.autofocus",
    "full_inference_pixels": "inference.autofocus", "draw_focus": "inference.autofocus",
    "image_proposals": "inference.proposal_dump", "dump_proposals": "inference.proposal_dump",
    # torch / detectron2: evaluation
    "SniperCOCOEvaluator": "inference.evaluation", "build_sniper_evaluator": "inference.evaluation",
    "tiled_inference_on_dataset": "inference.evaluation",
    "run_sniper_inference_on_dataset": "inference.evaluation",
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
