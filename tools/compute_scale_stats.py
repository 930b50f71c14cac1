#!/usr/bin/env python
"""Object size statistics of a COCO json, and the SNIPER settings they call for.

Prints the size distribution (sqrt area in pixels and relative to the image), a ready ``SNIPER:``
yaml fragment (scales, valid ranges, chip size, stride, negative-chip thresholds, test scales and
ranges), chips per image and training pixels against single-scale and full-pyramid training, and
saves a histogram PNG with the valid ranges drawn plus the fragment as a yaml file. The derivation
is documented in ``sniper_d2/stats.py``. Needs numpy, PyYAML and matplotlib; not torch.

Example:
    python tools/compute_scale_stats.py datasets/synthetic/train.json \\
        --config configs/sniper_tiny_cpu.yaml --output-dir output/scale_stats
    # sniper_scales.yaml holds `_BASE_: <--config>` plus the fragment, so it trains as is:
    python train_net.py --config-file output/scale_stats/sniper_scales.yaml
"""

import argparse
import logging
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from sniper_d2 import stats  # noqa: E402
from sniper_d2.coco import load_coco_records  # noqa: E402
from sniper_d2.config import is_fit  # noqa: E402
from sniper_d2.io import atomic_open  # noqa: E402
from sniper_d2.cli import run_main  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset_json", help="COCO-style instances json")
    p.add_argument("--config", help="detectron2 yaml config (read with PyYAML, _BASE_ followed) for the "
                                    "anchor sizes (MODEL.ANCHOR_GENERATOR.SIZES) and SNIPER.CHIP_SIZE")
    p.add_argument("--anchor-sizes", type=float, nargs="+",
                   help="RPN anchor sizes in scaled pixels (default: from --config, else 32 64 128 256 512)")
    p.add_argument("--chip-size", type=int, help="chip side in scaled pixels (default: from --config, else 512)")
    p.add_argument("--low-percentile", type=float, default=2.0,
                   help="size percentile the finest scale brings up to the smallest anchor (default: %(default)s)")
    p.add_argument("--max-scale", type=float, default=4.0, help="largest resize factor (default: %(default)s)")
    p.add_argument("--sample-images", type=int, default=200,
                   help="images planned to estimate chips per image (default: %(default)s)")
    p.add_argument("--output-dir", default="output/scale_stats",
                   help="folder for size_histogram.png and sniper_scales.yaml (the fragment, with "
                        "_BASE_ set to --config when given) (default: %(default)s)")
    return p.parse_args(argv)


def _settings(args):
    cfg = stats.read_config_yaml(args.config) if args.config else {}
    anchors = args.anchor_sizes or stats.config_value(cfg, "MODEL.ANCHOR_GENERATOR.SIZES",
                                                      stats.DEFAULT_ANCHOR_SIZES)
    chip = args.chip_size or int(stats.config_value(cfg, "SNIPER.CHIP_SIZE", 512))
    return anchors, chip


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()
    anchors, chip = _settings(args)
    records, _ = load_coco_records(args.dataset_json)
    absolute, relative, _ = stats.object_sizes(records)
    sizes_hw = stats.image_sizes(records)
    print(f"{args.dataset_json}: {len(records)} images, {len(absolute)} objects (crowd left out), "
          f"mean image {sizes_hw[:, 1].mean():.0f}x{sizes_hw[:, 0].mean():.0f} (WxH)")
    print(stats.size_summary(absolute, relative))

    suggestion = stats.suggest_sniper_params(absolute, sizes_hw, anchors, chip,
                                             low_percentile=args.low_percentile, max_scale=args.max_scale)
    band_lo, band_hi = suggestion.band
    print(f"\ncomfortable band {band_lo:g}-{band_hi:g} scaled px (anchors {list(stats._flatten(anchors))}, "
          f"chip {chip}); size percentiles {args.low_percentile:g}% / {100 - args.low_percentile:g}%: "
          f"{suggestion.percentiles[0]:.1f} / {suggestion.percentiles[1]:.1f} px\n")
    fragment = suggestion.to_yaml()
    print(fragment)

    cost = stats.estimate_cost(records, suggestion, sample_images=args.sample_images)
    per_scale = ", ".join(f"{'fit' if is_fit(s) else f'{s:g}x'}: {c:.2f}"
                          for s, c in zip(suggestion.scales, cost["chips_per_image"]))
    print(f"positive chips per image per epoch ({cost['images']} images sampled): {per_scale}; "
          f"total {cost['chips_per_image'].sum():.2f}")
    sniper = cost["sniper"]
    for name, key in (("single-scale, original size", "single_scale_original"),
                      ("single-scale, short side 800 / long 1333", "single_scale_800"),
                      ("full pyramid at these scales", "pyramid")):
        ratio = sniper / cost[key] if cost[key] else float("nan")
        print(f"training pixels per image: SNIPER {sniper / 1e6:.2f} MP vs {name} {cost[key] / 1e6:.2f} MP "
              f"({ratio:.2f}x)")
    print("(positive chips only; add SNIPER.NEG.CHIPS_PER_IMAGE x CHIP_SIZE^2 with negative chips)")

    os.makedirs(args.output_dir, exist_ok=True)
    png = os.path.join(args.output_dir, "size_histogram.png")
    stats.plot_size_histogram(absolute, relative, suggestion, png)
    frag_path = os.path.join(args.output_dir, "sniper_scales.yaml")
    base = f"_BASE_: \"{os.path.abspath(args.config)}\"\n" if args.config else ""
    with atomic_open(frag_path) as f:
        f.write(f"# derived by tools/compute_scale_stats.py from {args.dataset_json}\n" + base + fragment)
    print(f"\nwrote {png} and {frag_path} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    run_main(main, "compute_scale_stats.py")
