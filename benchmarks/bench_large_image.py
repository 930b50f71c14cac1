#!/usr/bin/env python
"""Peak memory of the real ``tools/infer.py`` on huge images, against the same command on a 1k image.

Each run is ``tools/infer.py`` in a subprocess (drawing included, tiles prepared in its data-loader
worker), with the tiny CPU config, one test scale (``--scale``, plus runs at scale 1 for the JPEG)
and random weights saved to a file. While it runs, the proportional set size (PSS: shared pages
split between the processes that share them) of the whole process tree is sampled every 50 ms; the
peak is reported next to the peak RSS of the largest single process (``getrusage(RUSAGE_CHILDREN)``).
Extra memory = peak - peak of the same command on a 1,000 x 1,000 JPEG, also in decoded copies of the
image (H x W x 3 bytes).

Inputs, written here and deleted afterwards: a 1k and a 10k JPEG (random 8x8 px blocks), and a
30,000 x 30,000 tiled BigTIFF (512 px tiles, zlib, constant-colour tiles) written tile by tile.

Example:
    python benchmarks/bench_large_image.py            # about 5 minutes on 2 cores
    python benchmarks/bench_large_image.py --no-tiff --no-full-res
"""

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_jpeg(path, side):
    """A side x side JPEG of random 8 px blocks, written by a child process (this one stays small)."""
    subprocess.run([sys.executable, "-c", (
        "import cv2, numpy as np, sys; s = int(sys.argv[2]); "
        "small = np.random.default_rng(0).integers(0, 255, (s // 8, s // 8, 3), dtype=np.uint8); "
        "cv2.imwrite(sys.argv[1], cv2.resize(small, (s, s), interpolation=cv2.INTER_NEAREST))"),
        path, str(side)], check=True)


def write_tiled_tiff(path, side, tile=512):
    """A side x side RGB BigTIFF written tile by tile (constant colour per tile): no full image in memory."""
    import tifffile

    rng = np.random.default_rng(0)
    n = -(-side // tile)
    colours = rng.integers(0, 255, (n * n, 3), dtype=np.uint8)

    def tiles():
        for c in colours:
            yield np.broadcast_to(c, (tile, tile, 3))

    tifffile.imwrite(path, tiles(), shape=(side, side, 3), dtype=np.uint8, tile=(tile, tile), photometric="rgb",
                     bigtiff=True, compression="zlib")


def _pss_kb(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _tree(pid):
    """pid and all its descendants (from /proc/<pid>/task/*/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def run_infer(image, scale, weights, out_dir):
    """tools/infer.py on one image in a subprocess: (peak tree PSS MB, peak single-process RSS MB, seconds)."""
    cmd = [sys.executable, os.path.join(ROOT, "tools", "infer.py"), "--config-file",
           os.path.join(ROOT, "configs", "sniper_tiny_cpu.yaml"), "--input", image, "--output", out_dir,
           "SNIPER.TEST.SCALES", f"({scale},)", "SNIPER.TEST.VALID_RANGES", "((0.0, -1.0),)",
           "SNIPER.TEST.TILE_SIZE", "1024", "SNIPER.TEST.TILE_OVERLAP", "128", "MODEL.WEIGHTS", weights]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, sum(_pss_kb(p) for p in _tree(proc.pid)))
        time.sleep(0.05)
    seconds = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"bench_large_image.py: error: infer.py failed on {image}:\n{proc.stderr.read()[-3000:]}")
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return peak / 1024, (rss if rss > before else float("nan")) / 1024, seconds


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jpeg-side", type=int, default=10000)
    p.add_argument("--tiff-side", type=int, default=30000)
    p.add_argument("--scale", type=float, default=0.25, help="the test scale (default: %(default)s)")
    p.add_argument("--no-tiff", action="store_true", help="skip the 30k TIFF")
    p.add_argument("--no-full-res", action="store_true", help="skip the JPEG run at scale 1")
    args = p.parse_args()

    work = tempfile.mkdtemp(prefix="bench_large_")
    try:
        weights = os.path.join(work, "random.pth")
        subprocess.run([sys.executable, "-c", (
            "import sys, torch; sys.path.insert(0, sys.argv[2]); import sniper_d2.modeling; "
            "from detectron2.config import get_cfg; from detectron2.modeling import build_model; "
            "from sniper_d2.config import add_sniper_config; cfg = get_cfg(); add_sniper_config(cfg); "
            "cfg.merge_from_file(sys.argv[3]); torch.manual_seed(0); "
            "torch.save({'model': build_model(cfg).state_dict()}, sys.argv[1])"),
            weights, ROOT, os.path.join(ROOT, "configs", "sniper_tiny_cpu.yaml")], check=True)
        small, big = os.path.join(work, "small.jpg"), os.path.join(work, "big.jpg")
        write_jpeg(small, 1000)
        write_jpeg(big, args.jpeg_side)
        runs = [("1k JPEG (reference)", small, 1000, args.scale),
                (f"{args.jpeg_side // 1000}k JPEG", big, args.jpeg_side, args.scale)]
        if not args.no_full_res:
            runs += [("1k JPEG (reference)", small, 1000, 1.0), (f"{args.jpeg_side // 1000}k JPEG", big, args.jpeg_side, 1.0)]
        if not args.no_tiff:
            tiff = os.path.join(work, "big.tif")
            t = time.perf_counter()
            write_tiled_tiff(tiff, args.tiff_side)
            print(f"wrote a {args.tiff_side}x{args.tiff_side} tiled BigTIFF in {time.perf_counter() - t:.1f} s "
                  f"({os.path.getsize(tiff) / 2**20:.0f} MB on disk)", flush=True)
            runs.append((f"{args.tiff_side // 1000}k tiled TIFF", tiff, args.tiff_side, args.scale))
        print("tools/infer.py, tiny R18-FPN config, random weights, tiles 1024 px, drawing on; peak PSS of the "
              "process tree (main + data-loader worker), peak RSS of the largest process")
        reference = {}
        for name, image, side, scale in runs:
            pss, rss, seconds = run_infer(image, scale, weights, os.path.join(work, "out"))
            copy_mb = side * side * 3 / 2**20
            if side == 1000:
                reference[scale] = pss
                print(f"  scale {scale:<5} {name:<22s} peak {pss:7.0f} MB (largest process {rss:6.0f} MB), "
                      f"{seconds:5.1f} s", flush=True)
                continue
            extra = pss - reference[scale]
            print(f"  scale {scale:<5} {name:<22s} peak {pss:7.0f} MB (largest process {rss:6.0f} MB), {seconds:5.1f} s; "
                  f"+{extra:.0f} MB over the 1k run = {extra / copy_mb:.2f} decoded copies ({copy_mb:.0f} MB each)",
                  flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
