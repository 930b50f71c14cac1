"""Evaluation results on disk: ``eval_results.json`` (versioned, atomic) and side-by-side tables."""

from .io import load_json_artifact, save_json_artifact

__all__ = ["EVAL_RESULTS_FORMAT", "save_eval_results", "load_eval_results", "format_side_by_side"]

EVAL_RESULTS_FORMAT = "sniper_d2.eval_results"
_VERSION = 1
_COLUMNS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def save_eval_results(path, results, cfg=None):
    """Write ``{dataset: {task: {metric: value}}}`` (detectron2's test() output) atomically."""
    payload = {"results": {k: dict(v) for k, v in results.items()}}
    if cfg is not None:
        payload["config"] = {"sniper_enabled": bool(cfg.SNIPER.ENABLED), "weights": cfg.MODEL.WEIGHTS,
                             "output_dir": cfg.OUTPUT_DIR}
    save_json_artifact(path, EVAL_RESULTS_FORMAT, _VERSION, payload)


def load_eval_results(path):
    """Inverse of :func:`save_eval_results`: returns the ``results`` dict."""
    return load_json_artifact(path, EVAL_RESULTS_FORMAT, _VERSION)["results"]


def format_side_by_side(named_bbox_results, columns=_COLUMNS):
    """A text table, one row per model: ``named_bbox_results`` is {model name: {"AP": ..., ...}}."""
    width = max(len(n) for n in named_bbox_results) + 2
    lines = ["model".ljust(width) + "".join(c.rjust(8) for c in columns)]
    for name, metrics in named_bbox_results.items():
        lines.append(name.ljust(width) + "".join(f"{metrics.get(c, float('nan')):8.2f}" for c in columns))
    return "\n".join(lines)
