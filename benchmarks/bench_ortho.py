#!/usr/bin/env python
"""A 30,000 x 30,000 orthomosaic through the real ``tools/infer.py``: memory, speed, SAHI, AutoFocus.

The raster is what photogrammetry tools write with GDAL: one GeoTIFF, tiled 512 px, JPEG/YCbCr,
BigTIFF, EPSG:32611, an internal nodata mask (an octagonal footprint; 8% of a side deep at the
border), internal overviews 2, 4, ... 64 (averaged). Written here with rasterio window by window
(textured content: smooth noise at several scales; a minute or two), or given with ``--raster``
(e.g. ``tools/make_synthetic_dataset.py --ortho --size 30000``).

Each run is one subprocess whose process tree's PSS is sampled every 50 ms (bench_large_image.py's
sampler), with the tiny CPU config and random weights saved to a file (speed and memory do not depend
on the weights; detections do):

- **ours**: ``tools/infer.py`` at ``--scale`` (default 0.25: 64 tiles of 1024 px, read from the
  factor-4 overview), drawing on. Extra memory is measured against the same command on a 1,000 px
  JPEG at the scale that gives it the raster's scaled size (the same tiles, batches and model work:
  bench_large_image.py's reference), so what is left is what grows with the raster. Throughput:
  raster megapixels per second of the whole command (start-up included).
- **SAHI** ``get_sliced_prediction`` on the same raster file, the same model and the same model
  input per tile: slices of ``tile / scale`` px (4096 at 0.25) overlapping by ``overlap / tile``,
  which its detectron2 wrapper resizes to ``tile`` px (``image_size``), tiles only
  (``perform_standard_pred=False``). SAHI reads the whole raster into memory first (Pillow). If it
  fails (out of memory, an unreadable file), the failure is reported.
- **AutoFocus**: ``tools/infer.py`` with the AutoFocus config (random weights: where it zooms in is
  arbitrary; the path's memory and time are what is measured) at scales (``scale``, ``scale / 2``):
  the coarse pass over the whole raster, the finer scale in its focus chips.

Default run (side 30000, scale 0.25): about 6-9 minutes on 2 cores, most of it SAHI. Results are
printed and saved to benchmarks/results/bench_ortho.json.

Example:
    python benchmarks/bench_ortho.py
    python benchmarks/bench_ortho.py --raster datasets/ortho30k/ortho.tif --no-sahi
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_large_image import (OVERLAP, REF_SIDE, ROOT, TILE, run_infer, run_sampled,  # noqa: E402
                               save_random_weights, tiles_of, write_jpeg)
from results_store import add_results_argument, save_benchmark_results  # noqa: E402


def write_ortho(path, side, block=512, border_fraction=0.08, seed=0):
    """A side x side orthomosaic-like GeoTIFF (see the module docstring), written 8 x 8 blocks at a time."""
    import warnings

    import cv2
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    rng = np.random.default_rng(seed)
    coarse = rng.integers(40, 215, (side // 256 + 2, side // 256 + 2, 3), dtype=np.uint8)  # one value per 256 px
    step = 8 * block
    fine = np.repeat(np.repeat(rng.integers(-12, 13, (step // 4, step // 4, 1), dtype=np.int16), 4, axis=0), 4, axis=1)
    border = int(border_fraction * side)
    profile = dict(driver="GTiff", width=side, height=side, count=3, dtype="uint8", tiled=True, blockxsize=block,
                   blockysize=block, compress="JPEG", photometric="YCBCR", jpeg_quality=90, BIGTIFF="YES",
                   crs="EPSG:32611", transform=from_origin(500000.0, 3762000.0, 0.05, 0.05))
    with warnings.catch_warnings(), rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as ds:
            for y in range(0, side, step):
                for x in range(0, side, step):
                    w, h = min(step, side - x), min(step, side - y)
                    # smooth colour from the coarse grid plus fine noise: JPEG work like a real scene
                    cy, cx = y // 256, x // 256
                    patch = coarse[cy:cy + h // 256 + 2, cx:cx + w // 256 + 2]
                    big = cv2.resize(patch, (patch.shape[1] * 256, patch.shape[0] * 256),
                                     interpolation=cv2.INTER_LINEAR)[:h, :w]
                    pixels = np.clip(big.astype(np.int16) + fine[:h, :w], 0, 255).astype(np.uint8)
                    # the footprint, an octagon (the raster minus the border, corners cut at 45 degrees),
                    # decided per 8 x 8 px cell
                    xs = np.arange(x, x + w, 8, dtype=np.int64)[None, :] + 4
                    ys = np.arange(y, y + h, 8, dtype=np.int64)[:, None] + 4
                    dx, dy = np.minimum(xs, side - 1 - xs), np.minimum(ys, side - 1 - ys)
                    cells = (np.minimum(dx, dy) >= border) & (dx + dy >= 3 * border)
                    valid = np.repeat(np.repeat(cells, 8, axis=0), 8, axis=1)[:h, :w]
                    pixels[~valid] = 0
                    win = Window(x, y, w, h)
                    ds.write(pixels.transpose(2, 0, 1), window=win)
                    ds.write_mask((valid * 255).astype(np.uint8), window=win)
        factors = [2 ** k for k in range(1, 7) if side // 2 ** k >= block // 2]
        with rasterio.open(path, "r+") as ds:
            ds.build_overviews(factors, Resampling.average)


def sahi_child(raster, config_file, weights, slice_px, overlap, tile):
    """Run in a child process: SAHI's sliced prediction on the raster; prints one JSON line."""
    sys.path.insert(0, ROOT)
    import sniper_d2.modeling  # noqa: F401  (registers the SNIPER heads for SAHI's DefaultPredictor)
    from sahi.models.detectron2 import Detectron2DetectionModel
    from sahi.predict import get_sliced_prediction

    from sniper_d2.cli import setup_cfg

    cfg = setup_cfg(config_file, ["MODEL.DEVICE", "cpu"], purpose="read")
    cfg_path = os.path.join(os.path.dirname(weights), "sahi_config.yaml")
    with open(cfg_path, "w") as f:
        f.write(cfg.dump())
    model = Detectron2DetectionModel(config_path=cfg_path, model_path=weights, confidence_threshold=0.5,
                                     image_size=tile, device="cpu")
    start = time.perf_counter()
    result = get_sliced_prediction(raster, model, slice_height=slice_px, slice_width=slice_px,
                                   overlap_height_ratio=overlap, overlap_width_ratio=overlap,
                                   perform_standard_pred=False, verbose=0)
    print(json.dumps({"seconds": time.perf_counter() - start, "detections": len(result.object_prediction_list)}))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--side", type=int, default=30000, help="raster side written here, px (default: %(default)s)")
    p.add_argument("--raster", default="", help="an existing orthomosaic GeoTIFF instead of writing one")
    p.add_argument("--scale", type=float, default=0.25, help="test scale of ours and SAHI's equivalent "
                   "slice size tile/scale (default: %(default)s)")
    p.add_argument("--no-sahi", action="store_true", help="skip SAHI")
    p.add_argument("--no-autofocus", action="store_true", help="skip AutoFocus")
    p.add_argument("--sahi-child", nargs=6, metavar=("RASTER", "CONFIG", "WEIGHTS", "SLICE", "OVERLAP", "TILE"),
                   help=argparse.SUPPRESS)
    add_results_argument(p, "bench_ortho")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.sahi_child:
        raster, config, weights, slice_px, overlap, tile = args.sahi_child
        sahi_child(raster, config, weights, int(slice_px), float(overlap), int(tile))
        return
    sys.path.insert(0, ROOT)
    work = tempfile.mkdtemp(prefix="bench_ortho_")
    figures = {"tile_px": TILE, "overlap_px": OVERLAP, "scale": args.scale, "weights": "random"}
    try:
        raster = args.raster
        if not raster:
            raster = os.path.join(work, "ortho.tif")
            t = time.perf_counter()
            write_ortho(raster, args.side)
            print(f"wrote a {args.side}x{args.side} tiled JPEG/YCbCr GeoTIFF (mask, overviews) in "
                  f"{time.perf_counter() - t:.0f} s ({os.path.getsize(raster) / 2**20:.0f} MiB)", flush=True)
        import rasterio

        with rasterio.open(raster) as ds:
            side_h, side_w = ds.height, ds.width
            figures["raster"] = {"width": side_w, "height": side_h, "compression": ds.compression.name,
                                 "block": list(ds.block_shapes[0]), "overviews": ds.overviews(1),
                                 "crs": str(ds.crs)}
        side = max(side_h, side_w)
        mp = side_h * side_w / 1e6
        copy_mb = side_h * side_w * 3 / 2**20
        weights = os.path.join(work, "random.pth")
        save_random_weights(weights)
        small = os.path.join(work, "small.jpg")
        write_jpeg(small, REF_SIDE)
        out = os.path.join(work, "out")
        n_tiles = tiles_of(side, args.scale)
        equal = args.scale * side / REF_SIDE
        print(f"tools/infer.py, tiny R18-FPN config, random weights, tiles {TILE} px (overlap {OVERLAP}), "
              f"peak PSS of the process tree; MiB", flush=True)
        ref_pss, _, ref_s = run_infer(small, equal, weights, out)
        pss, rss, seconds = run_infer(raster, args.scale, weights, out)
        with open(os.path.join(out, "results_meta.json")) as f:
            pixels_run = sum(sum(v) for v in json.load(f)["pixels_per_scale"].values())
        figures["ours"] = {"peak_pss_mib": pss, "largest_process_rss_mib": rss, "seconds": seconds,
                           "mp_per_s": mp / seconds, "tiles_without_nodata_skipping": n_tiles,
                           "scaled_pixels_run": pixels_run,
                           "reference_1k_jpeg": {"scale": equal, "peak_pss_mib": ref_pss, "seconds": ref_s},
                           "extra_mib": pss - ref_pss, "extra_decoded_copies": (pss - ref_pss) / copy_mb}
        print(f"  ours at scale {args.scale} ({n_tiles} windows; {pixels_run / (n_tiles * TILE * TILE):.0%} of their "
              f"pixels run, the rest lies in nodata): peak {pss:.0f}, {seconds:.1f} s, {mp / seconds:.1f} MP/s\n"
              f"    1k JPEG at scale {equal:g} (the same windows): peak {ref_pss:.0f}, {ref_s:.1f} s\n"
              f"    extra: +{pss - ref_pss:.0f} MiB = {(pss - ref_pss) / copy_mb:.3f} decoded copies "
              f"({copy_mb:.0f} MiB each)", flush=True)
        if not args.no_autofocus:
            af_weights = os.path.join(work, "random_af.pth")
            save_random_weights(af_weights, "sniper_tiny_cpu_autofocus.yaml")
            scales = (args.scale, args.scale / 2)
            extra = ["SNIPER.AUTOFOCUS.THRESHOLDS", "(0.5, 0.5)", "SNIPER.AUTOFOCUS.DILATIONS", "(2, 2)",
                     "SNIPER.AUTOFOCUS.MIN_CHIP_SIZES", "(256, 256)"]
            shutil.rmtree(out, ignore_errors=True)
            af_pss, af_rss, af_s = run_infer(raster, scales, af_weights, out, extra, "sniper_tiny_cpu_autofocus.yaml")
            with open(os.path.join(out, "results_meta.json")) as f:
                per_file = json.load(f)["pixels_per_scale"].values()
            af_pixels = [sum(v[k] for v in per_file) for k in range(2)]
            figures["autofocus"] = {"scales": scales, "peak_pss_mib": af_pss, "seconds": af_s, "mp_per_s": mp / af_s,
                                    "scaled_pixels_run": af_pixels, "extra_mib_over_reference": af_pss - ref_pss}
            print(f"  AutoFocus at scales {scales} (random focus head): peak {af_pss:.0f} (+{af_pss - ref_pss:.0f} "
                  f"over the reference), {af_s:.1f} s, {mp / af_s:.1f} MP/s; pixels run per scale {af_pixels}",
                  flush=True)
        if not args.no_sahi:
            slice_px = int(round(TILE / args.scale))
            cmd = [sys.executable, os.path.abspath(__file__), "--sahi-child", raster,
                   os.path.join(ROOT, "configs", "sniper_tiny_cpu.yaml"), weights, str(slice_px),
                   str(OVERLAP / TILE), str(TILE)]
            s_pss, s_rss, s_s, code, tail = run_sampled(cmd)
            entry = {"slice_px": slice_px, "peak_pss_mib": s_pss, "largest_process_rss_mib": s_rss, "seconds": s_s,
                     "returncode": code}
            if code:
                entry["error"] = tail.strip().splitlines()[-1] if tail.strip() else f"exit code {code}"
                print(f"  SAHI get_sliced_prediction, {slice_px} px slices -> {TILE} px: FAILED after {s_s:.0f} s "
                      f"(peak {s_pss:.0f}): {entry['error']}", flush=True)
            else:
                entry.update(mp_per_s=mp / s_s, extra_mib_over_reference=s_pss - ref_pss)
                print(f"  SAHI get_sliced_prediction, {slice_px} px slices -> {TILE} px, tiles only: peak {s_pss:.0f} "
                      f"(+{s_pss - ref_pss:.0f} over our reference), {s_s:.1f} s, {mp / s_s:.1f} MP/s\n"
                      f"    ours vs SAHI: {s_s / seconds:.2f}x the speed, {s_pss / pss:.1f}x less peak memory",
                      flush=True)
            figures["sahi"] = entry
        save_benchmark_results("bench_ortho", figures, args.results)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
