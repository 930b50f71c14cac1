"""Evaluation results on disk: ``eval_results.json`` (versioned, atomic), written by train_net.py."""

from .io import load_json_artifact, save_json_artifact

__all__ = ["EVAL_RESULTS_FORMAT", "save_eval_results", "load_eval_results"]

EVAL_RESULTS_FORMAT = "sniper_d2.eval_results"
_VERSION = 1


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
