"""The steps of an experiment as the user runs them, shared by tools/demo.py and benchmarks/bench_accuracy.py.

Each step is a command line (printed before it runs, so it can be repeated by hand) run as its own
process, one after the other (one torch job at a time): data generation, configs from the data
(``tools/compute_scale_stats.py``), training / evaluation (``train_net.py``), proposal dumps. The
read-back helpers turn the results into tables. Numpy only: no torch in this process.
"""

import contextlib
import json
import os
import subprocess
import sys
import time

import numpy as np

from sniper_d2.results import load_eval_results

from .analysis import false_positive_stats, false_positives_at_recall, load_coco_results

__all__ = ["ROOT", "StepFailed", "HEAVY_LOCK_ENV", "run", "schedule_opts", "seed_opts", "make_configs", "train",
           "evaluate", "dump_proposals", "bbox_results", "clutter_false_positives", "seconds_per_iteration",
           "mean_spread", "format_mean_spread", "format_side_by_side"]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the checkout
# When this environment variable names a file, every step holds an exclusive lock on it while it
# runs (fcntl.flock, as ``flock FILE cmd`` does), so that on a shared machine one torch job runs at a
# time and other jobs can take turns between the steps.
HEAVY_LOCK_ENV = "SNIPER_HEAVY_LOCK"


class StepFailed(RuntimeError):
    """A step's process exited with a non-zero status (its output was printed above)."""


def run(cmd, quiet=False, heavy=False):
    """Run one step from the repository root, echoing the command; returns its wall time in seconds.

    Args:
        cmd (list[str]): the command. quiet (bool): hide its output unless it fails.
        heavy (bool): a torch job (training, evaluation, proposal dump): hold ``$SNIPER_HEAVY_LOCK``.

    Raises:
        StepFailed: the command failed.
    """
    print("\n$ " + " ".join(cmd), flush=True)
    with _heavy_lock() if heavy else contextlib.nullcontext():
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=quiet, text=True)
    if proc.returncode != 0:
        if quiet:
            sys.stdout.write(proc.stdout[-5000:] + proc.stderr[-5000:])
        raise StepFailed(f"this step failed (exit status {proc.returncode}; output above): {' '.join(cmd[:3])} ...")
    elapsed = time.perf_counter() - start
    print(f"  ({elapsed:.0f} s)", flush=True)
    return elapsed


@contextlib.contextmanager
def _heavy_lock():
    """Hold the lock file named by ``$SNIPER_HEAVY_LOCK`` (if set) for the duration of one step."""
    path = os.environ.get(HEAVY_LOCK_ENV)
    if not path:
        yield
        return
    import fcntl

    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def schedule_opts(iters):
    """A schedule of ``iters`` iterations: warm-up, LR drops at 80% and 93% (distinct, inside it)."""
    steps = tuple(sorted({int(iters * 0.8), int(iters * 0.93)} - {0}))
    return ["SOLVER.MAX_ITER", str(iters), "SOLVER.STEPS", str(steps), "SOLVER.CHECKPOINT_PERIOD", str(iters),
            "SOLVER.WARMUP_ITERS", str(min(50, iters // 4))]


def seed_opts(seed):
    """The model's seed and the chip plan's seed."""
    return ["SEED", str(seed), "SNIPER.PLAN.SEED", str(seed)]


def make_configs(train_json, test_jsons, base_config, output_dir, name, *extra, quiet=False):
    """``tools/compute_scale_stats.py``: write ``sniper.yaml``, ``baseline.yaml`` and ``sliced.yaml``.

    Returns:
        dict: ``sniper``, ``baseline``, ``sliced`` (config paths), ``recommendation`` (its json).
    """
    run([sys.executable, "tools/compute_scale_stats.py", train_json, "--val-json", *test_jsons, "--config",
         base_config, "--output-dir", output_dir, "--name", name, *extra], quiet=quiet)
    return {key: os.path.join(output_dir, f"{key}.{'json' if key == 'recommendation' else 'yaml'}")
            for key in ("sniper", "baseline", "sliced", "recommendation")}


def train(config, output_dir, iters, *opts, quiet=False):
    """``train_net.py`` for ``iters`` iterations from ``config`` into ``output_dir`` (then its evaluation)."""
    run([sys.executable, "train_net.py", "--config-file", config, "--num-gpus", "1", *schedule_opts(iters),
         "OUTPUT_DIR", output_dir, *opts], quiet=quiet, heavy=True)
    return output_dir


def evaluate(config, output_dir, weights, *opts, quiet=False):
    """``train_net.py --eval-only``: evaluate ``weights`` with ``config`` into ``output_dir`` (``weights``
    win over a ``MODEL.WEIGHTS`` among ``opts``)."""
    run([sys.executable, "train_net.py", "--config-file", config, "--num-gpus", "1", "--eval-only",
         "OUTPUT_DIR", output_dir, *opts, "MODEL.WEIGHTS", weights], quiet=quiet, heavy=True)  # last: these weights
    return output_dir


def seconds_per_iteration(output_dir, skip=20):
    """Median training time per iteration (s) of a run, from detectron2's ``metrics.json`` (the
    ``time`` field, iterations after ``skip``); NaN when the run logged none."""
    path = os.path.join(output_dir, "metrics.json")
    times = []
    if os.path.isfile(path):
        with open(path) as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if "time" in entry and entry.get("iteration", 0) >= skip:
                    times.append(float(entry["time"]))
    return float(np.median(times)) if times else float("nan")


def dump_proposals(config, output_dir, weights, proposals, *opts, quiet=False):
    """``tools/dump_proposals.py``: the weak detector's proposals over the training set."""
    run([sys.executable, "tools/dump_proposals.py", "--config-file", config, "--output", proposals,
         "OUTPUT_DIR", output_dir, "MODEL.WEIGHTS", weights, *opts], quiet=quiet, heavy=True)
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
