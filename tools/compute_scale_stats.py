#!/usr/bin/env python
"""Object size statistics of a COCO json, the SNIPER settings they call for, and the configs to train.

Prints the size distribution, why these scales (sniper_d2/stats/derivation.py has the rule), the ``SNIPER:``
fragment, and training pixels per image measured by planning a sample of images with the real
planner: SNIPER's chips against the full pyramid at the same scales and the single scale that puts
the median object in the band (one line says so when SNIPER saves little). Writes, under
``--output-dir``:

- ``size_histogram.png``: sizes with every valid range, each object's scaled size against the band;
- ``sniper_scales.yaml``: the ``SNIPER:`` fragment (``_BASE_`` = ``--config`` when given);
- ``recommendation.json``: the data traits, their case and the method recommended (see below);
- with ``--config``: ``sniper.yaml`` (``_BASE_`` = ``--config``, plus NUM_CLASSES, the data sets,
  a detection cap above the most crowded image and the derived SNIPER section), ``baseline.yaml``
  (the single-scale baseline at equal training pixels per iteration, same caps) and ``sliced.yaml``
  (plain slicing: every tile at the one scale that puts the median object mid-band, as many chips
  per iteration, inference on tiles at that scale); then it prints the exact commands that train
  and evaluate them.

It ends with a recommendation: which of sniper.yaml and sliced.yaml to train first, from the data's
traits (size spread against the band, background tiles, tiles per image; sniper_d2/recommend.py)
and the method that won on the benchmarked data set of the same kind (``--evidence``).

Needs numpy, PyYAML and matplotlib; not torch.

Example:
    python tools/compute_scale_stats.py datasets/mydata/train.json --val-json datasets/mydata/val.json \\
        --config configs/sniper_r50_fpn.yaml --output-dir output/mydata_configs
"""

import argparse
import logging
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from sniper_d2 import config_writer, recommend, stats  # noqa: E402
from sniper_d2.cli import run_main  # noqa: E402
from sniper_d2.coco import load_coco_records  # noqa: E402
from sniper_d2.config_files import config_value, read_config_yaml  # noqa: E402
from sniper_d2.io import ArtifactError, atomic_open, load_json_artifact, save_json_artifact  # noqa: E402

EVIDENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks", "results",
                        "bench_accuracy.json")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset_json", help="COCO-style instances json of the training set")
    p.add_argument("--val-json", nargs="+", default=[],
                   help="validation / test jsons: registered in the written configs and evaluated (DATASETS.TEST)")
    p.add_argument("--name", help="prefix of the registered data set names, <name>_<json stem> "
                                  "(default: the json's folder name)")
    p.add_argument("--image-root", default="",
                   help="folder of the training images (default: next to the json or its images/ subfolder)")
    p.add_argument("--config", help="detectron2 yaml config (read with PyYAML, _BASE_ followed): anchor sizes, "
                                    "SNIPER.CHIP_SIZE, and the _BASE_ of the written configs")
    p.add_argument("--anchor-sizes", type=float, nargs="+",
                   help="RPN anchor sizes in scaled pixels (default: from --config, else 32 64 128 256 512)")
    p.add_argument("--chip-size", type=int, help="chip side in scaled pixels (default: from --config, else 512)")
    p.add_argument("--low-percentile", type=float, default=2.0,
                   help="objects between this size percentile and 100 minus it are put in the band at some "
                        "scale (default: %(default)s)")
    p.add_argument("--max-scale", type=float, default=4.0, help="largest resize factor (default: %(default)s)")
    p.add_argument("--min-fraction", type=float, default=0.01,
                   help="a scale holding a smaller fraction of the objects is dropped when others cover them "
                        "(default: %(default)s)")
    p.add_argument("--num-scales", type=int,
                   help="fixed scales before dropping (default: the fewest that put every object in the band, at least 2: "
                        "one scale trained clearly worse than two on dense data, docs/planning.md)")
    p.add_argument("--slice-overlap", type=float, default=config_writer.DEFAULT_SLICE_OVERLAP,
                   help="sliced.yaml: overlap of neighbouring training tiles, fraction of the chip "
                        "(default: %(default)s)")
    p.add_argument("--evidence", default=os.path.normpath(EVIDENCE),
                   help="benchmarks/bench_accuracy.py results the recommendation quotes (default: %(default)s; "
                        "'' for none)")
    p.add_argument("--sample-images", type=int, default=200,
                   help="images planned with the real planner to measure chips per image (default: %(default)s)")
    p.add_argument("--output-dir", default="output/scale_stats", help="folder for the outputs (default: %(default)s)")
    return p.parse_args(argv)


def _settings(args):
    cfg = read_config_yaml(args.config) if args.config else {}
    anchors = args.anchor_sizes or config_value(cfg, "MODEL.ANCHOR_GENERATOR.SIZES", stats.DEFAULT_ANCHOR_SIZES)
    chip = args.chip_size or int(config_value(cfg, "SNIPER.CHIP_SIZE", 512))
    return cfg, anchors, chip


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()
    cfg, anchors, chip = _settings(args)
    records, categories = load_coco_records(args.dataset_json, args.image_root or None)
    absolute, relative, image_index = stats.object_sizes(records)
    sizes_hw = stats.image_sizes(records)
    print(f"{args.dataset_json}: {len(records)} images, {len(absolute)} objects (crowd left out), "
          f"{len(categories)} categories, mean image {sizes_hw[:, 1].mean():.0f}x{sizes_hw[:, 0].mean():.0f} (WxH)")
    print(stats.size_summary(absolute, relative))

    suggestion = stats.suggest_sniper_params(absolute, sizes_hw, anchors, chip, low_percentile=args.low_percentile,
                                             max_scale=args.max_scale, min_fraction=args.min_fraction,
                                             num_scales=args.num_scales)
    print("\nwhy these scales:")
    for line in suggestion.explanation:
        print(f"  {line}")
    for line in suggestion.warnings:
        print(f"WARNING: {line}")
    fragment = suggestion.to_yaml()
    print("\n" + fragment)
    cost = stats.estimate_cost(records, suggestion, sample_images=args.sample_images)
    print("\n".join(stats.cost_report(cost, suggestion)))

    slicing = config_writer.slice_settings(absolute, suggestion, args.slice_overlap)
    traits = recommend.data_traits(records, suggestion.band, slicing.scale, suggestion.chip_size, slicing.overlap,
                                   sample_images=args.sample_images)
    method, advice = recommend.recommend(traits, _measured(args.evidence))

    os.makedirs(args.output_dir, exist_ok=True)
    png = os.path.join(args.output_dir, "size_histogram.png")
    stats.plot_size_histogram(absolute, relative, suggestion, png, image_index=image_index, sizes_hw=sizes_hw)
    frag_path = os.path.join(args.output_dir, "sniper_scales.yaml")
    base = f"_BASE_: \"{os.path.abspath(args.config)}\"\n" if args.config else ""
    with atomic_open(frag_path) as f:
        f.write(f"# derived by tools/compute_scale_stats.py from {args.dataset_json}\n" + base + fragment)
    advice_path = os.path.join(args.output_dir, "recommendation.json")
    save_json_artifact(advice_path, "sniper_d2.recommendation", 1,
                       {"traits": traits, "case": recommend.data_case(traits), "method": method, "lines": advice,
                        "slice_scale": slicing.scale, "band": list(suggestion.band)})
    print(f"\nwrote {png}, {frag_path} and {advice_path}")
    if not args.config:
        print("give --config to also write sniper.yaml, baseline.yaml and sliced.yaml, ready to train")
        _print_advice(advice)
        return
    train = config_writer.dataset_info(args.dataset_json, records, categories, prefix=args.name)
    tests = [config_writer.dataset_info(path, prefix=args.name) for path in args.val_json]
    written = config_writer.write_configs(args.output_dir, args.config, cfg, suggestion, train, tests,
                                          image_roots=[os.path.abspath(args.image_root) if args.image_root else ""],
                                          slicing=slicing)
    print(f"wrote {written['sniper']} (NUM_CLASSES {len(categories)}, detection cap {written['cap']}), "
          f"{written['baseline']} ({written['baseline_images']} image(s) per iteration at short side "
          f"{written['baseline_short']}, equal training pixels) and {written['sliced']} (every tile at "
          f"{slicing.scale:g}x, overlap {slicing.overlap:g}) in {time.perf_counter() - start:.1f} s")
    print("next:")
    for command in written["commands"]:
        print(f"  {command}")
    _print_advice(advice)


def _measured(path):
    """The ``by_dataset`` figures of a bench_accuracy results file; None when there is none."""
    if not path or not os.path.isfile(path):
        return None
    try:
        payload = load_json_artifact(path, "sniper_d2.benchmark_results", 1)
    except ArtifactError as e:
        logging.getLogger("compute_scale_stats").warning(f"recommendation without measured figures: {e}")
        return None
    return payload.get("figures", {}).get("by_dataset")


def _print_advice(lines):
    print("\nSNIPER or slicing?")
    for line in lines:
        print(f"  {line}")


if __name__ == "__main__":
    run_main(main, "compute_scale_stats.py")
