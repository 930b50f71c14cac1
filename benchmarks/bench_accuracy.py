#!/usr/bin/env python
"""Does SNIPER beat slicing? SNIPER, plain slicing and the equal-pixel single-scale baseline, and the
negative-chip study, each over several seeds (mean, sample standard deviation, min and max; never one run).

Every run goes through the user's path: ``tools/compute_scale_stats.py`` writes ``sniper.yaml``,
``sliced.yaml`` and ``baseline.yaml`` from the training json, ``train_net.py`` trains and evaluates them,
``tools/dump_proposals.py`` dumps the weak detector's proposals. The three configs train the same model
from scratch for the same iterations at equal training pixels per iteration (SNIPER and slicing: the
same chips per iteration; the baseline: whole images shrunk to the same pixels); they differ only in
what they train on and how they infer. Per seed (``SEED`` and ``SNIPER.PLAN.SEED``; the data are the
same for every seed):

1. ``methods``: the three configs on two data sets: the synthetic multi-scale set (objects of 6-400 px,
   3 classes, look-alike distractors) and the dense single-band set (one class, 60-80 objects of
   8-110 px per image: where slicing is what practitioners use). Figures: COCO AP, APs, APm, APl on the
   validation split at the end of the schedule and at its middle (the model saved half-way, evaluated
   on its own: does the ranking change between the last two evaluations?), false positives per image at
   equal (50 %) recall on the distractor-heavy clutter split (synthetic set), training time per iteration.
2. ``negatives``: the step-1 SNIPER model of the synthetic set continued for ``--neg-iters`` on positive
   chips only and with negative chips mined from its proposals: the same figures (no half-way evaluation).

Runs go seed by seed (every method on both data sets), then the negative study seed by seed; the tables
are printed and ``summary.json`` rewritten after every run, and a run whose ``eval_results.json``
exists is read back instead of redone: running the same command again continues a cut-short bench.
After every run (``"final": true`` once all are done) the figures land in
``benchmarks/results/bench_accuracy.json`` (machine, commit, date, every
run, mean/std/min/max), from which ``--table`` prints the README's markdown tables, and
``tools/compute_scale_stats.py`` quotes them when it recommends a config.

Each step takes the lock file named by ``--lock`` while it runs (one torch job at a time on a shared
machine; other jobs interleave between steps). CPU budget of the defaults (3 seeds; 10 + 3 + 3 synthetic
images of 500-700 px, 6 + 2 dense images of 700-800 px; 100 iterations per model, 40 per continuation:
18 trainings + 18 half-way evaluations, 3 proposal dumps, 6 continuations): about 35 minutes of exclusive
use of 2 idle CPU cores (0.6-0.75 s per iteration), about an hour on a busy one (1-1.7 s). Such short
runs from scratch rank the methods, they do not reach the accuracy of long training;
figures differ across machines and library builds, so compare the spreads, not single digits.

Examples:
    python benchmarks/bench_accuracy.py --output output/bench_accuracy --lock /tmp/sniper_heavy.lock
    python benchmarks/bench_accuracy.py --table            # the README's tables from the results JSON
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from results_store import add_results_argument, load_benchmark_results, save_benchmark_results  # noqa: E402

from lab import experiment as ex  # noqa: E402
from lab.accuracy_tables import METHODS, markdown_tables, ranking, summarize  # noqa: E402
from sniper_d2.coco import load_coco_records  # noqa: E402
from sniper_d2.io import ArtifactError, load_json_artifact, save_json_artifact  # noqa: E402

BASE_CONFIG = "configs/sniper_tiny_cpu.yaml"



def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default="output/bench_accuracy", help="output folder (default: %(default)s)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default: %(default)s)")
    p.add_argument("--iters", type=int, default=100, help="iterations per model from scratch (default: %(default)s)")
    p.add_argument("--neg-iters", type=int, default=40,
                   help="iterations continuing SNIPER with / without negative chips (default: %(default)s)")
    p.add_argument("--train-images", type=int, default=10, help="synthetic training images (default: %(default)s)")
    p.add_argument("--val-images", type=int, default=3, help="synthetic validation images (default: %(default)s)")
    p.add_argument("--clutter-images", type=int, default=3, help="distractor-heavy images (default: %(default)s)")
    p.add_argument("--sides", type=int, nargs=2, default=[500, 700],
                   help="synthetic image sides, px (default: %(default)s)")
    p.add_argument("--dense-train", type=int, default=6, help="dense training images (default: %(default)s)")
    p.add_argument("--dense-val", type=int, default=2, help="dense validation images (default: %(default)s)")
    p.add_argument("--dense-sides", type=int, nargs=2, default=[700, 800],
                   help="dense image sides, px (default: %(default)s)")
    p.add_argument("--dense-objects", type=int, nargs=2, default=[60, 80],
                   help="objects per dense image (default: %(default)s)")
    p.add_argument("--skip", nargs="*", default=[], choices=["dense", "negatives", "mid"],
                   help="parts to leave out: the dense set, the negative-chip study, the half-way evaluations")
    p.add_argument("--train-only", nargs="*", default=None, choices=["synthetic", "dense"], metavar="SET",
                   help="train models of these data sets only; finished runs of the others are still reported "
                        "(default: all)")
    p.add_argument("--lock", default="", help="lock file each step holds while it runs (e.g. /tmp/sniper_heavy.lock)")
    p.add_argument("--table", action="store_true", help="print the markdown tables of --results and exit")
    add_results_argument(p, "bench_accuracy")
    return p.parse_args(argv)


def make_data(args, out):
    """Generate the data sets and their configs; returns {name: {"configs", "val", "clutter"}}."""
    py = sys.executable
    syn, dense = os.path.join(out, "data", "synthetic"), os.path.join(out, "data", "dense")
    ex.run([py, "tools/make_synthetic_dataset.py", "--output", syn, "--train", str(args.train_images),
            "--val", str(args.val_images), "--clutter", str(args.clutter_images),
            "--min-side", str(args.sides[0]), "--max-side", str(args.sides[1])], quiet=True)
    data = {"synthetic": {"configs": ex.make_configs(
        os.path.join(syn, "train.json"), [os.path.join(syn, "val.json"), os.path.join(syn, "clutter.json")],
        BASE_CONFIG, os.path.join(out, "configs", "synthetic"), "synthetic", quiet=True),
        "val": "synthetic_val", "clutter": os.path.join(syn, "clutter.json")}}
    if "dense" not in args.skip:
        ex.run([py, "tools/make_synthetic_dataset.py", "--dense", "--output", dense, "--train", str(args.dense_train),
                "--val", str(args.dense_val), "--min-side", str(args.dense_sides[0]),
                "--max-side", str(args.dense_sides[1]), "--objects", *map(str, args.dense_objects)], quiet=True)
        data["dense"] = {"configs": ex.make_configs(
            os.path.join(dense, "train.json"), [os.path.join(dense, "val.json")], BASE_CONFIG,
            os.path.join(out, "configs", "dense"), "dense", quiet=True), "val": "dense_val", "clutter": None}
    return data


def main(argv=None):
    args = parse_args(argv)
    if args.table:
        print(markdown_tables(load_benchmark_results(args.results)["figures"]))
        return
    if args.lock:
        os.environ[ex.HEAVY_LOCK_ENV] = os.path.abspath(args.lock)
    start = time.perf_counter()
    out = os.path.abspath(args.output)
    data = make_data(args, out)
    clutter = {name: load_coco_records(d["clutter"])[0] for name, d in data.items() if d["clutter"]}
    runs = {}  # "dataset | method" -> list over seeds of run figures

    def record(key, output_dir, dataset_name, iters):
        d = data[dataset_name]
        entry = {"seed": int(os.path.basename(os.path.dirname(output_dir))[4:]),
                 "bbox": ex.bbox_results(output_dir, d["val"]),
                 "seconds_per_iter": ex.seconds_per_iteration(output_dir)}
        mid = os.path.join(output_dir, "mid")
        if os.path.isfile(os.path.join(mid, "eval_results.json")):
            entry["bbox_mid"] = ex.bbox_results(mid, d["val"])
            entry["mid_iter"] = iters // 2
        if d["clutter"]:
            fp = ex.clutter_false_positives(output_dir, f"{dataset_name}_clutter", clutter[dataset_name])
            entry["fp_at_50_recall"] = fp["at_recall"]["fp_per_image"] if fp["at_recall"]["reached"] else None
            entry["fp_at_score_0.5"] = fp["fixed"]["fp_per_image"]
        runs.setdefault(key, []).append(entry)
        report(args, data, runs, out, time.perf_counter() - start)

    def train(config, output_dir, iters, dataset_name, *opts, mid=True):
        """Train (with a half-way checkpoint, evaluated on its own when ``mid``) unless a finished run is
        there; None when the run is missing and ``--train-only`` leaves its data set out."""
        finished = os.path.isfile(os.path.join(output_dir, "eval_results.json"))
        if finished:
            print(f"\n(reusing {output_dir})", flush=True)
        elif args.train_only is not None and dataset_name not in args.train_only:
            return None
        else:
            ex.train(config, output_dir, iters, *opts, "SOLVER.CHECKPOINT_PERIOD", str(iters // 2), quiet=True)
        half = os.path.join(output_dir, f"model_{iters // 2 - 1:07d}.pth")
        mid_dir = os.path.join(output_dir, "mid")
        done = os.path.isfile(os.path.join(mid_dir, "eval_results.json"))
        trains = args.train_only is None or dataset_name in args.train_only
        if mid and trains and "mid" not in args.skip and os.path.isfile(half) and not done:
            ex.evaluate(config, mid_dir, half, *opts, "DATASETS.TEST", f'("{data[dataset_name]["val"]}",)',
                        quiet=True)
        return output_dir

    for seed in args.seeds:  # seed by seed: a cut-short bench has as many seeds of every method and data set
        seed_dir = os.path.join(out, f"seed{seed}")
        for name, d in data.items():
            for method in METHODS:
                o = train(d["configs"][method], os.path.join(seed_dir, f"{name}_{method}"), args.iters, name,
                          *ex.seed_opts(seed))
                if o is not None:
                    record(f"{name} | {method}", o, name, args.iters)
    if "negatives" not in args.skip:
        cfg = data["synthetic"]["configs"]["sniper"]
        for seed in args.seeds:
            seed_dir, sopts = os.path.join(out, f"seed{seed}"), ex.seed_opts(seed)
            sniper_out = os.path.join(seed_dir, "synthetic_sniper")
            weights = os.path.join(sniper_out, "model_final.pth")
            proposals = os.path.join(seed_dir, "proposals.npz")
            if not os.path.isfile(proposals):
                ex.dump_proposals(cfg, sniper_out, weights, proposals, quiet=True)
            for key, extra in (("positives", ()), ("negatives", ("SNIPER.NEG.PROPOSALS_FILE", proposals))):
                o = train(cfg, os.path.join(seed_dir, f"synthetic_sniper_{key}"), args.neg_iters, "synthetic",
                          *sopts, "MODEL.WEIGHTS", weights, *extra, mid=False)
                if o is not None:
                    record(f"negatives | {key}", o, "synthetic", args.neg_iters)
    report(args, data, runs, out, time.perf_counter() - start, final=True)


def report(args, data, runs, out, seconds, final=False):
    """Print the tables so far, write ``summary.json`` and the results JSON (``final`` False until the end)."""
    summary = {key: summarize(entries) for key, entries in runs.items()}
    by_dataset = {}
    for name, d in data.items():
        rec = load_json_artifact(d["configs"]["recommendation"], "sniper_d2.recommendation", 1)
        methods = {m: summary[f"{name} | {m}"] for m in METHODS if f"{name} | {m}" in summary}
        if methods:
            by_dataset[name] = {"case": rec["case"], "traits": rec["traits"], "slice_scale": rec["slice_scale"],
                                "AP": {m: {k: s["AP"][k] for k in ("mean", "std", "n")} for m, s in methods.items()},
                                "ranking_end": ranking(methods, METHODS),
                                "ranking_mid": ranking(methods, METHODS, "mid")}
    figures = {"settings": {k: v for k, v in vars(args).items() if k not in ("table", "results", "lock")},
               "minutes": seconds / 60, "final": final, "summary": summary, "by_dataset": by_dataset, "runs": runs}
    print(f"\n== bench_accuracy{'' if final else ' (so far)'}: {seconds / 60:.1f} min on {os.cpu_count()} CPU cores ==")
    print(markdown_tables(figures), flush=True)
    save_json_artifact(os.path.join(out, "summary.json"), "sniper_d2.bench_accuracy", 2, figures)
    save_benchmark_results("bench_accuracy", figures, args.results)


if __name__ == "__main__":
    try:
        main()
    except (ex.StepFailed, ArtifactError) as e:
        sys.exit(f"bench_accuracy.py: {e}")
