#!/usr/bin/env python
"""The end-to-end CPU demo on the synthetic data set (what ``bash scripts/demo.sh`` runs).

Steps, each a command a user could run by hand (they are printed before they run):
  1. generate the synthetic data set (tools/make_synthetic_dataset.py);
  2. train SNIPER (configs/sniper_tiny_cpu.yaml) and evaluate it with tiled multi-scale inference;
  3. train the equal-pixel single-scale baseline (configs/faster_rcnn_tiny_cpu.yaml) and evaluate it;
  4. print both COCO AP tables side by side;
  5. draw the SNIPER model's detections on the validation images (tools/infer.py).
Everything lands under ``--output`` (default ``output/demo``).

Example:
    python tools/demo.py --iters 300
"""

import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from sniper_d2.results import format_side_by_side, load_eval_results  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default="output/demo", help="output folder (default: %(default)s)")
    p.add_argument("--data", default="datasets/synthetic", help="synthetic data folder (default: %(default)s)")
    p.add_argument("--iters", type=int, default=300, help="training iterations per model (default: %(default)s)")
    p.add_argument("--train-images", type=int, default=24, help="synthetic training images (default: %(default)s)")
    p.add_argument("--val-images", type=int, default=8, help="synthetic validation images (default: %(default)s)")
    return p.parse_args(argv)


def run(cmd):
    """Run one step, echoing the command; a failing step stops the demo with its exit code."""
    print("\n$ " + " ".join(cmd), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True)
    print(f"  ({time.perf_counter() - start:.0f} s)", flush=True)


def data_opts(args):
    """Command-line config overrides that point a config at the demo's data and schedule."""
    train = os.path.join(args.data, "train.json")
    val = os.path.join(args.data, "val.json")
    steps = (int(args.iters * 0.8), int(args.iters * 0.93))
    return ["SNIPER.REGISTER_COCO", f'(("synthetic_train", "{train}", ""), ("synthetic_val", "{val}", ""))',
            "SOLVER.MAX_ITER", str(args.iters), "SOLVER.STEPS", str(steps),
            "SOLVER.CHECKPOINT_PERIOD", str(args.iters)]


def train(args, config, name):
    out = os.path.join(args.output, name)
    run([sys.executable, "train_net.py", "--config-file", config, "--num-gpus", "1",
         *data_opts(args), "OUTPUT_DIR", out])
    return out


def main(argv=None):
    args = parse_args(argv)
    py = sys.executable
    run([py, "tools/make_synthetic_dataset.py", "--output", args.data,
         "--train", str(args.train_images), "--val", str(args.val_images)])
    sniper_out = train(args, "configs/sniper_tiny_cpu.yaml", "sniper")
    baseline_out = train(args, "configs/faster_rcnn_tiny_cpu.yaml", "baseline")

    tables = {}
    for name, out in (("SNIPER (chips, 3 scales)", sniper_out), ("single-scale baseline", baseline_out)):
        results = load_eval_results(os.path.join(out, "eval_results.json"))
        tables[name] = results["synthetic_val"]["bbox"]
    print("\nCOCO box AP on the synthetic validation set (equal training pixels per iteration):")
    print(format_side_by_side(tables))

    drawn = os.path.join(args.output, "detections")
    run([py, "tools/infer.py", "--config-file", "configs/sniper_tiny_cpu.yaml",
         "--input", os.path.join(args.data, "images", "val_*.jpg"), "--output", drawn,
         "--confidence-threshold", "0.5", "MODEL.WEIGHTS", os.path.join(sniper_out, "model_final.pth")])
    print(f"\nDone. Results: {args.output}/*/eval_results.json; drawn detections: {drawn}/")


if __name__ == "__main__":
    main()
