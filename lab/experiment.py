"""The steps of an experiment as the user runs them, shared by tools/demo.py and benchmarks/bench_accuracy.py.

Each step is a command line (printed before it runs, so it can be repeated by hand) run as its own
process, one after the other (one torch job at a time): data generation, configs from the data
(``tools/compute_scale_stats.py``), training / evaluation (``train_net.py``), proposal dumps. The
read-back helpers turn the results into tables. Numpy only: no torch in this process.
"""

import os
import subprocess
import sys
import time

import numpy as np

from sniper_d2.results import load_eval_results

from .analysis import false_positive_stats, false_positives_at_recall, load_coco_results

__all__ = ["ROOT", "StepFailed", "run", "schedule_opts", "seed_opts", "make_configs", "train", "dump_proposals",
           "bbox_results", "clutter_false_positives", "mean_spread", "format_mean_spread", "format_side_by_side"]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the checkout


class StepFailed(RuntimeError):
    """A step's process exited with a non-zero status (its output was printed above)."""


def run(cmd, quiet=False):
    """Run one step from the repository root, echoing the command; returns its wall time in seconds.

    Args:
        cmd (list[str]): the command. quiet (bool): hide its output unless it fails.

    Raises:
        StepFailed: the command failed.
    """
    print("\n$ " + " ".join(cmd), flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=quiet, text=True)
    if proc.returncode != 0:
        if quiet:
            sys.stdout.write(proc.stdout[-5000:] + proc.stderr[-5000:])
        raise StepFailed(f"this step failed (exit status {proc.returncode}; output above): {' '.join(cmd[:3])} ...")
    elapsed = time.perf_counter() - start
    print(f"  ({elapsed:.0f} s)", flush=True)
    return elapsed


def schedule_opts(iters):
    """A schedule of ``iters`` iterations: warm-up, LR drops at 80% and 93% (distinct, inside it)."""
    steps = tuple(sorted({int(iters * 0.8), int(iters * 0.93)} - {0}))
    return ["SOLVER.MAX_ITER", str(iters), "SOLVER.STEPS", str(steps), "SOLVER.CHECKPOINT_PERIOD", str(iters),
            "SOLVER.WARMUP_ITERS", str(min(50, iters // 4))]


def seed_opts(seed):
    """The model's seed and the chip plan's seed."""
    return ["SEED", str(seed), "SNIPER.PLAN.SEED", str(seed)]


def make_configs(train_json, test_jsons, base_config, output_dir, name, *extra, quiet=False):
    """``tools/compute_scale_stats.py``: write ``sniper.yaml`` and ``baseline.yaml`` for the data.

    Returns:
        dict: ``sniper``, ``baseline`` (config paths).
    """
    run([sys.executable, "tools/compute_scale_stats.py", train_json, "--val-json", *test_jsons, "--config",
         base_config, "--output-dir", output_dir, "--name", name, *extra], quiet=quiet)
    return {"sniper": os.path.join(output_dir, "sniper.yaml"), "baseline": os.path.join(output_dir, "baseline.yaml")}


def train(config, output_dir, iters, *opts, quiet=False):
    """``train_net.py`` for ``iters`` iterations from ``config`` into ``output_dir`` (then its evaluation)."""
    run([sys.executable, "train_net.py", "--config-file", config, "--num-gpus", "1", *schedule_opts(iters),
         "OUTPUT_DIR", output_dir, *opts], quiet=quiet)
    return output_dir


def dump_proposals(config, output_dir, weights, proposals, *opts, quiet=False):
    """``tools/dump_proposals.py``: the weak detector's proposals over the training set."""
    run([sys.executable, "tools/dump_proposals.py", "--config-file", config, "--output", proposals,
         "OUTPUT_DIR", output_dir, "MODEL.WEIGHTS", weights, *opts], quiet=quiet)
    return proposals


def bbox_results(output_dir, dataset):
    """COCO box metrics ({"AP": ..., "APs": ...}) of a run's ``eval_results.json`` for one data set."""
    return load_eval_results(os.path.join(output_dir, "eval_results.json"))[dataset]["bbox"]


def clutter_false_positives(output_dir, dataset, records, recall=0.5, score_threshold=0.5):
    """False positives per image of a run on a data set: at a fixed score and at equal recall.

    Returns:
        dict: ``fixed`` (:func:`analysis.false_positive_stats`) and ``at_recall``
        (:func:`analysis.false_positives_at_recall`; ``reached`` False when the model never
        finds ``recall`` of the objects).
    """
    dets = load_coco_results(os.path.join(output_dir, "inference", dataset, "coco_instances_results.json"))
    at_recall = false_positives_at_recall(dets, records, recall=recall)
    at_recall["reached"] = bool(at_recall["recall"] >= recall)
    return {"fixed": false_positive_stats(dets, records, score_threshold=score_threshold), "at_recall": at_recall}


def mean_spread(values):
    """(mean, sample standard deviation, min, max) of a list of numbers (std 0 for one value; NaNs left out)."""
    x = np.asarray([v for v in values if v == v], np.float64)
    if len(x) == 0:
        return float("nan"), float("nan"), float("nan"), float("nan")
    return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else 0.0, float(x.min()), float(x.max())


def format_mean_spread(values, digits=1):
    """``"mean ± std [min, max]"`` of a list of numbers."""
    m, s, lo, hi = mean_spread(values)
    return f"{m:.{digits}f} ± {s:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def format_side_by_side(named_bbox_results, columns=("AP", "AP50", "AP75", "APs", "APm", "APl")):
    """A text table, one row per model: ``named_bbox_results`` is {model name: {"AP": ..., ...}}."""
    width = max(len(n) for n in named_bbox_results) + 2
    lines = ["model".ljust(width) + "".join(c.rjust(8) for c in columns)]
    for name, metrics in named_bbox_results.items():
        lines.append(name.ljust(width) + "".join(f"{metrics.get(c, float('nan')):8.2f}" for c in columns))
    return "\n".join(lines)
