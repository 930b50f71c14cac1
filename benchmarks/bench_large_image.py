#!/usr/bin/env python
"""Peak memory of the real ``tools/infer.py`` on huge images, against the same command on a 1k image.

Each run is ``tools/infer.py`` in a subprocess (drawing included, tiles prepared in its data-loader
worker), with the tiny CPU config, one test scale and random weights saved to a file. While it
runs, the proportional set size (PSS: shared pages split between the processes that share them) of
the whole process tree is sampled every 50 ms; the peak is reported next to the peak RSS (VmHWM) of
the largest single process. Extra memory = peak - peak of the reference run, also in decoded copies
of the big image (H x W x 3 bytes; MiB throughout).

The reference does the same model work. The same command on the 1,000 px image at the same scale
runs far fewer and smaller tiles (at scale 0.25: one 250 px tile against nine 1024 px tiles in
batches of 4), and the model's activations on full tile batches are several hundred MiB that have
nothing to do with the image's size. So the reference is the 1k JPEG at the scale that gives its
scaled image the big image's scaled size (scale x side / 1000: 2.5 for the 10k JPEG at 0.25): the
same tile windows, tile sizes and batches, the same merge and drawing steps; what is left is the
memory that grows with the image. The extra over the 1k image at the same scale is printed too.

Inputs, written here and deleted afterwards: a 1k and a 10k JPEG (random 8x8 px blocks), and a
30,000 x 30,000 RGB BigTIFF (512 px tiles, zlib, one colour per tile) written tile by tile with
rasterio (:func:`write_tiled_tiff`): the 2.7 GB image is never held, and the file is a few MiB on disk. The reader
decodes every segment to its full 512 x 512 x 3 bytes whatever its content, so memory is what a
real orthomosaic costs (its decoding time is not). The TIFF runs at scale 0.125 by default (25 tiles
of 1024 px; a few minutes on 2 cores; ``--tiff-scale``).

Example:
    python benchmarks/bench_large_image.py            # about 7 minutes on 2 cores
    python benchmarks/bench_large_image.py --no-tiff --full-res
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REF_SIDE = 1000  # the reference image side, px
TILE, OVERLAP, TILE_BATCH = 1024, 128, 4  # SNIPER.TEST.TILE_SIZE / TILE_OVERLAP; TILE_BATCH_SIZE of the config


def write_jpeg(path, side):
    """A side x side JPEG of random 8 px blocks, written by a child process (this one stays small)."""
    subprocess.run([sys.executable, "-c", (
        "import cv2, numpy as np, sys; s = int(sys.argv[2]); "
        "small = np.random.default_rng(0).integers(0, 255, (s // 8, s // 8, 3), dtype=np.uint8); "
        "cv2.imwrite(sys.argv[1], cv2.resize(small, (s, s), interpolation=cv2.INTER_NEAREST))"),
        path, str(side)], check=True)


def write_tiled_tiff(path, side, tile=512, **profile):
    """A side x side RGB BigTIFF written tile by tile with rasterio (constant colour per tile): no
    full image in memory. ``profile``: more GDAL creation options (e.g. compress="JPEG", photometric="YCBCR")."""
    import warnings

    import rasterio
    from rasterio.windows import Window

    rng = np.random.default_rng(0)
    n = -(-side // tile)
    colours = rng.integers(0, 255, (n * n, 3), dtype=np.uint8)
    options = {"compress": "DEFLATE", **profile}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="GTiff", width=side, height=side, count=3, dtype="uint8", tiled=True,
                           blockxsize=tile, blockysize=tile, BIGTIFF="YES", **options) as ds:
            for k, c in enumerate(colours):
                row, col = divmod(k, n)
                win = Window(col * tile, row * tile, min(tile, side - col * tile), min(tile, side - row * tile))
                ds.write(np.broadcast_to(c[:, None, None], (3, int(win.height), int(win.width))), window=win)


def _proc_field_kb(path, key):
    """The kB value of the ``key:`` line of a /proc file; 0 when the process is gone."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pss_kb(pid):
    """Proportional set size of one process, kB."""
    return _proc_field_kb(f"/proc/{pid}/smaps_rollup", "Pss")


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


def _vm_hwm_kb(pid):
    """Peak resident set size so far of one process (VmHWM), kB; 0 when it is gone."""
    return _proc_field_kb(f"/proc/{pid}/status", "VmHWM")


def run_sampled(cmd):
    """Run ``cmd`` (a list) in a subprocess while sampling the memory of its process tree every 50 ms.

    Returns:
        (peak tree PSS MiB, peak RSS of the largest process MiB, seconds, return code, stderr's tail).
    """
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:  # a pipe could fill up and block a chatty child
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err, text=True)
        peak, hwm = 0, {}
        while proc.poll() is None:
            tree = _tree(proc.pid)
            peak = max(peak, sum(_pss_kb(p) for p in tree))
            for p in tree:
                hwm[p] = max(hwm.get(p, 0), _vm_hwm_kb(p))
            time.sleep(0.05)
        seconds = time.perf_counter() - start
        err.seek(0)
        tail = err.read()[-3000:]
    return peak / 1024, max(hwm.values(), default=0) / 1024, seconds, proc.returncode, tail


def run_infer(image, scale, weights, out_dir, extra=(), config="sniper_tiny_cpu.yaml"):
    """tools/infer.py on one image in a subprocess: (peak tree PSS MiB, peak RSS of the largest process MiB, s).

    ``scale``: one test scale (every size kept), or a tuple of scales (then ``extra`` sets the
    matching per-scale keys, e.g. SNIPER.TEST.VALID_RANGES). ``config``: a file in configs/.
    """
    scales = tuple(scale) if isinstance(scale, (tuple, list)) else (scale,)
    cmd = [sys.executable, os.path.join(ROOT, "tools", "infer.py"), "--config-file",
           os.path.join(ROOT, "configs", config), "--input", image, "--output", out_dir,
           "SNIPER.TEST.SCALES", repr(scales), "SNIPER.TEST.VALID_RANGES", repr(((0.0, -1.0),) * len(scales)),
           "SNIPER.TEST.TILE_SIZE", str(TILE), "SNIPER.TEST.TILE_OVERLAP", str(OVERLAP), "MODEL.WEIGHTS", weights,
           *extra]
    pss, rss, seconds, code, tail = run_sampled(cmd)
    if code:
        sys.exit(f"{os.path.basename(sys.argv[0])}: error: infer.py failed on {image}:\n{tail}")
    return pss, rss, seconds


def save_random_weights(path, config="sniper_tiny_cpu.yaml"):
    """Random weights of a config's model (seed 0) saved to ``path``, built in a child process."""
    subprocess.run([sys.executable, "-c", (
        "import sys, torch; sys.path.insert(0, sys.argv[2]); import sniper_d2.modeling; "
        "from detectron2.config import get_cfg; from detectron2.modeling import build_model; "
        "from sniper_d2.config import add_sniper_config; cfg = get_cfg(); add_sniper_config(cfg); "
        "cfg.merge_from_file(sys.argv[3]); torch.manual_seed(0); "
        "torch.save({'model': build_model(cfg).state_dict()}, sys.argv[1])"),
        path, ROOT, os.path.join(ROOT, "configs", config)], check=True)


def tiles_of(side, scale):
    """Number of tiles tools/infer.py runs on a side x side image at one scale."""
    from sniper_d2.geometry import scaled_size, tile_windows

    return len(tile_windows(scaled_size((side, side), scale), TILE, OVERLAP))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jpeg-side", type=int, default=10000)
    p.add_argument("--tiff-side", type=int, default=30000)
    p.add_argument("--scale", type=float, default=0.25, help="the test scale of the JPEG (default: %(default)s)")
    p.add_argument("--tiff-scale", type=float, default=0.125, help="the test scale of the TIFF (default: %(default)s)")
    p.add_argument("--no-jpeg", action="store_true", help="skip the JPEG")
    p.add_argument("--no-tiff", action="store_true", help="skip the TIFF")
    p.add_argument("--full-res", action="store_true", help="also the JPEG at scale 1 (100 tiles; long)")
    args = p.parse_args()
    sys.path.insert(0, ROOT)

    work = tempfile.mkdtemp(prefix="bench_large_")
    try:
        weights = os.path.join(work, "random.pth")
        save_random_weights(weights)
        small = os.path.join(work, "small.jpg")
        write_jpeg(small, REF_SIDE)
        big_runs = []
        if not args.no_jpeg:
            big = os.path.join(work, "big.jpg")
            write_jpeg(big, args.jpeg_side)
            big_runs.append((f"{args.jpeg_side // 1000}k JPEG", big, args.jpeg_side, args.scale))
            if args.full_res:
                big_runs.append((f"{args.jpeg_side // 1000}k JPEG", big, args.jpeg_side, 1.0))
        if not args.no_tiff:
            tiff = os.path.join(work, "big.tif")
            t = time.perf_counter()
            write_tiled_tiff(tiff, args.tiff_side)
            print(f"wrote a {args.tiff_side}x{args.tiff_side} tiled BigTIFF tile by tile in {time.perf_counter() - t:.1f} s "
                  f"({os.path.getsize(tiff) / 2**20:.0f} MiB on disk)", flush=True)
            big_runs.append((f"{args.tiff_side // 1000}k tiled TIFF", tiff, args.tiff_side, args.tiff_scale))
        print(f"tools/infer.py, tiny R18-FPN config, random weights, tiles {TILE} px (overlap {OVERLAP}), "
              f"{TILE_BATCH} per forward, 1 data-loader worker, drawing on; peak PSS of the process tree "
              f"(main + worker), peak RSS of the largest process; MiB", flush=True)
        out = os.path.join(work, "out")
        for name, image, side, scale in big_runs:
            copy_mb = side * side * 3 / 2**20
            n_tiles = tiles_of(side, scale)
            equal = scale * side / REF_SIDE  # the 1k image at this scale has the big one's scaled size
            same_pss, _, _ = run_infer(small, scale, weights, out)
            ref_pss, ref_rss, ref_s = run_infer(small, equal, weights, out)
            pss, rss, seconds = run_infer(image, scale, weights, out)
            extra = pss - ref_pss
            print(f"  {name} at scale {scale} ({n_tiles} tiles): peak {pss:.0f} (largest process {rss:.0f}), "
                  f"{seconds:.1f} s\n"
                  f"    1k JPEG at scale {equal:g} (the same {n_tiles} tiles): peak {ref_pss:.0f} "
                  f"(largest process {ref_rss:.0f}), {ref_s:.1f} s\n"
                  f"    extra: +{extra:.0f} = {extra / copy_mb:.2f} decoded copies ({copy_mb:.0f} MiB each) "
                  f"[+{pss - same_pss:.0f} over the 1k JPEG at scale {scale}: {tiles_of(REF_SIDE, scale)} tile(s) "
                  f"of {int(round(REF_SIDE * scale))} px, less model work]", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
