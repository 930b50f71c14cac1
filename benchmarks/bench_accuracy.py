#!/usr/bin/env python
"""Accuracy that holds up: SNIPER against its equal-pixel baseline, negative chips, and how many scales,
each over several seeds (mean, sample standard deviation, min and max; never one run).

Every run goes through the user's path: ``tools/compute_scale_stats.py`` writes the SNIPER and
baseline configs from the training json, ``train_net.py`` trains and evaluates them (one torch job
at a time), ``tools/dump_proposals.py`` dumps the weak detector's proposals. Per seed (``SEED`` and
``SNIPER.PLAN.SEED``; the data sets are the same for every seed):

1. synthetic multi-scale set: SNIPER with the suggested scales and the single-scale baseline
   (``--iters`` each, from scratch): COCO AP, APs, APm, APl on the validation split, and false
   positives per image at equal (50 %) recall on the distractor-heavy clutter split;
2. negative chips: the step-1 SNIPER model continued for ``--neg-iters`` on positive chips only and
   with negative chips mined from its proposals: the same figures;
3. scale count: the suggestion against one fixed scale fewer and one more (``--num-scales``), on the
   synthetic set (the suggestion's run is step 1's) and on the generated dense single-band set (one
   class, 60-80 objects of 8-110 px per 700-800 px image; the rule suggests two scales there, its
   minimum, so one and three are trained against it). Where a suggestion has one scale (only with
   ``min_scales=1``), "one fewer" is impossible: only one more is trained.

Runs go study by study (all seeds of step 1, then of step 2, then of step 3), the tables are printed
and ``summary.json`` rewritten after every run, and a run whose ``eval_results.json`` exists is read
back instead of redone: a bench cut short still has every seed of its first studies, and running the
same command again continues it.

CPU budget: the defaults (8 + 3 + 3 small synthetic images of 500-700 px, 6 + 2 dense images,
100 iterations per model, 50 per continuation, 3 seeds: 24 trainings and 3 proposal dumps) are
sized for about 30 minutes on 2 otherwise idle CPU cores; run it under ``flock
/tmp/sniper_heavy.lock``. It prints its own wall time. Such short runs
from scratch rank the settings, they do not reach the accuracy of long training; figures differ
across machines and library builds (CPU kernels and thread counts change floating-point sums), so
compare the spreads, not single digits.

Example:
    flock /tmp/sniper_heavy.lock python benchmarks/bench_accuracy.py --output output/bench_accuracy
"""

import argparse
import os
import sys
import time

import yaml

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from lab import experiment as ex  # noqa: E402
from sniper_d2.coco import load_coco_records  # noqa: E402
from sniper_d2.io import save_json_artifact  # noqa: E402

BASE_CONFIG = "configs/sniper_tiny_cpu.yaml"
METRICS = ("AP", "APs", "APm", "APl")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default="output/bench_accuracy", help="output folder (default: %(default)s)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default: %(default)s)")
    p.add_argument("--iters", type=int, default=100, help="iterations per model from scratch (default: %(default)s)")
    p.add_argument("--neg-iters", type=int, default=50,
                   help="iterations continuing SNIPER with / without negative chips (default: %(default)s)")
    p.add_argument("--train-images", type=int, default=8, help="synthetic training images (default: %(default)s)")
    p.add_argument("--val-images", type=int, default=3, help="synthetic validation images (default: %(default)s)")
    p.add_argument("--clutter-images", type=int, default=3, help="distractor-heavy images (default: %(default)s)")
    p.add_argument("--sides", type=int, nargs=2, default=[500, 700], help="synthetic image sides, px (default: %(default)s)")
    p.add_argument("--dense-train", type=int, default=6, help="dense training images (default: %(default)s)")
    p.add_argument("--dense-val", type=int, default=2, help="dense validation images (default: %(default)s)")
    p.add_argument("--dense-sides", type=int, nargs=2, default=[700, 800], help="dense image sides, px (default: %(default)s)")
    p.add_argument("--dense-objects", type=int, nargs=2, default=[60, 80],
                   help="objects per dense image (default: %(default)s)")
    p.add_argument("--skip", nargs="*", default=[], choices=["negatives", "scales"], help="parts to leave out")
    return p.parse_args(argv)


def fixed_scales(config):
    """The number of fixed (non-fit) scales in a written sniper.yaml."""
    with open(config) as f:
        scales = yaml.safe_load(f)["SNIPER"]["SCALES"]
    return sum(1 for s in scales if s != -1), scales


def variant_counts(n):
    """Scale counts to compare with the suggestion's ``n``: one fewer (when n > 1) and one more."""
    return [n - 1, n + 1] if n > 1 else [n + 1]


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    out = os.path.abspath(args.output)
    py = sys.executable
    syn, dense = os.path.join(out, "data", "synthetic"), os.path.join(out, "data", "dense")
    ex.run([py, "tools/make_synthetic_dataset.py", "--output", syn, "--train", str(args.train_images),
            "--val", str(args.val_images), "--clutter", str(args.clutter_images),
            "--min-side", str(args.sides[0]), "--max-side", str(args.sides[1])], quiet=True)
    jsons = {split: os.path.join(syn, f"{split}.json") for split in ("train", "val", "clutter")}
    configs = {"synthetic": {}, "dense": {}}
    configs["synthetic"]["suggested"] = ex.make_configs(jsons["train"], [jsons["val"], jsons["clutter"]], BASE_CONFIG,
                                                        os.path.join(out, "configs", "synthetic"), "synthetic")
    n_syn, scales_syn = fixed_scales(configs["synthetic"]["suggested"]["sniper"])
    if "scales" not in args.skip:
        ex.run([py, "tools/make_synthetic_dataset.py", "--dense", "--output", dense, "--train", str(args.dense_train),
                "--val", str(args.dense_val), "--min-side", str(args.dense_sides[0]),
                "--max-side", str(args.dense_sides[1]), "--objects", *map(str, args.dense_objects)], quiet=True)
        dense_train, dense_val = os.path.join(dense, "train.json"), os.path.join(dense, "val.json")
        configs["dense"]["suggested"] = ex.make_configs(dense_train, [dense_val], BASE_CONFIG,
                                                        os.path.join(out, "configs", "dense"), "dense")
        n_dense, scales_dense = fixed_scales(configs["dense"]["suggested"]["sniper"])
        for name, n, train_json, tests in (("synthetic", n_syn, jsons["train"], [jsons["val"], jsons["clutter"]]),
                                           ("dense", n_dense, dense_train, [dense_val])):
            for k in variant_counts(n):
                configs[name][f"{k} scales"] = ex.make_configs(
                    train_json, tests, BASE_CONFIG, os.path.join(out, "configs", f"{name}_{k}"), name,
                    "--num-scales", str(k), quiet=True)
    clutter_records, _ = load_coco_records(jsons["clutter"])

    runs = {}  # (study, model) -> list over seeds of {"bbox": ..., "fp": ...}

    def record(study, model, output_dir, dataset, clutter=True):
        entry = {"seed": os.path.basename(os.path.dirname(output_dir)), "bbox": ex.bbox_results(output_dir, dataset)}
        if clutter:
            entry["fp"] = ex.clutter_false_positives(output_dir, "synthetic_clutter", clutter_records)
        runs.setdefault((study, model), []).append(entry)
        report(args, runs, out, time.perf_counter() - start)

    def train(config, output_dir, iters, *opts):
        """A run that finished before (its eval_results.json exists) is read back, not redone."""
        if os.path.isfile(os.path.join(output_dir, "eval_results.json")):
            print(f"\n(reusing {output_dir})", flush=True)
            return output_dir
        return ex.train(config, output_dir, iters, *opts, quiet=True)

    # Study by study, each over all seeds: the first studies have every seed even if the run is cut short.
    syn = configs["synthetic"]["suggested"]
    main_label = f"SNIPER {scales_syn}"
    for seed in args.seeds:
        seed_dir, sopts = os.path.join(out, f"seed{seed}"), ex.seed_opts(seed)
        record("main", main_label, train(syn["sniper"], os.path.join(seed_dir, "sniper"), args.iters, *sopts),
               "synthetic_val")
        record("main", "single-scale baseline",
               train(syn["baseline"], os.path.join(seed_dir, "baseline"), args.iters, *sopts), "synthetic_val")
    if "negatives" not in args.skip:
        for seed in args.seeds:
            seed_dir, sopts = os.path.join(out, f"seed{seed}"), ex.seed_opts(seed)
            sniper_out = os.path.join(seed_dir, "sniper")
            weights = os.path.join(sniper_out, "model_final.pth")
            proposals = os.path.join(seed_dir, "proposals.npz")
            if not os.path.isfile(proposals):
                ex.dump_proposals(syn["sniper"], sniper_out, weights, proposals, quiet=True)
            record("negatives", "positive chips only",
                   train(syn["sniper"], os.path.join(seed_dir, "sniper_pos_more"), args.neg_iters, *sopts,
                         "MODEL.WEIGHTS", weights), "synthetic_val")
            record("negatives", "+ negative chips",
                   train(syn["sniper"], os.path.join(seed_dir, "sniper_neg"), args.neg_iters, *sopts,
                         "MODEL.WEIGHTS", weights, "SNIPER.NEG.PROPOSALS_FILE", proposals), "synthetic_val")
    if "scales" not in args.skip:
        runs[("scales synthetic", f"suggested: {n_syn} scales")] = runs[("main", main_label)]
        for seed in args.seeds:
            seed_dir, sopts = os.path.join(out, f"seed{seed}"), ex.seed_opts(seed)
            for key, cfg in configs["synthetic"].items():
                if key != "suggested":
                    o = train(cfg["sniper"], os.path.join(seed_dir, f"synthetic_{key.replace(' ', '_')}"), args.iters,
                              *sopts, "DATASETS.TEST", '("synthetic_val",)')
                    record("scales synthetic", key, o, "synthetic_val", clutter=False)
            for key, cfg in configs["dense"].items():
                o = train(cfg["sniper"], os.path.join(seed_dir, f"dense_{key.replace(' ', '_')}"), args.iters, *sopts)
                label = f"suggested: {n_dense} scale{'s' * (n_dense > 1)} {scales_dense}" if key == "suggested" else key
                record("scales dense", label, o, "dense_val", clutter=False)
    report(args, runs, out, time.perf_counter() - start, final=True)


def report(args, runs, out, seconds, final=False):
    """Print the tables (mean ± sample std [min, max] over the seeds run so far) and write summary.json."""
    print(f"\n== bench_accuracy{'' if final else ' (so far)'}: seeds {args.seeds}, {args.iters} iterations per model "
          f"from scratch, {args.neg_iters} per continuation; {args.train_images} synthetic training images of "
          f"{args.sides[0]}-{args.sides[1]} px, {args.val_images} validation, {args.clutter_images} clutter; "
          f"dense: {args.dense_train} + {args.dense_val} images of {args.dense_sides[0]}-{args.dense_sides[1]} px; "
          f"{seconds / 60:.1f} min on {os.cpu_count()} CPU cores ==")
    print("mean ± sample std [min, max] over seeds (n = seeds run)")
    summary = {}
    for study in ("main", "negatives", "scales synthetic", "scales dense"):
        rows = [(model, entries) for (s, model), entries in runs.items() if s == study]
        if not rows:
            continue
        print(f"\n-- {study} --")
        for model, entries in rows:
            cells = {m: ex.mean_spread([e["bbox"][m] for e in entries]) for m in METRICS}
            line = "  ".join(f"{m} {ex.format_mean_spread([e['bbox'][m] for e in entries])}" for m in METRICS)
            print(f"  {model:<30s} n={len(entries)}  {line}")
            summary[f"{study} | {model}"] = {"bbox": cells, "seeds": len(entries)}
            if "fp" in entries[0]:
                fp = [e["fp"]["at_recall"]["fp_per_image"] if e["fp"]["at_recall"]["reached"] else float("nan")
                      for e in entries]
                reached = sum(e["fp"]["at_recall"]["reached"] for e in entries)
                print(f"  {'':<30s}      clutter FP per image at 50% recall: {ex.format_mean_spread(fp, 2)} "
                      f"(50% recall reached in {reached}/{len(entries)} seeds)")
                summary[f"{study} | {model}"]["fp_at_50_recall"] = ex.mean_spread(fp)
    save_json_artifact(os.path.join(out, "summary.json"), "sniper_d2.bench_accuracy", 1,
                       {"args": vars(args), "minutes": seconds / 60, "final": final, "results": summary,
                        "runs": {f"{s} | {m}": v for (s, m), v in runs.items()}})
    print(f"wrote {os.path.join(out, 'summary.json')}", flush=True)


if __name__ == "__main__":
    try:
        main()
    except ex.StepFailed as e:
        sys.exit(f"bench_accuracy.py: {e}")
