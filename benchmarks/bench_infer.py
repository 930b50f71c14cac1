#!/usr/bin/env python
"""Tiled inference speed, side by side in one run: ours vs SAHI's ``get_sliced_prediction``.

Equal work both ways: the same detector (the config's model with ``--weights``, or random weights
saved to a temporary file), the same image (a synthetic ``--side`` x ``--side`` scene saved as a
JPEG, which every variant reads itself), tiles of ``--tile`` px overlapping by ``--overlap`` of a
tile (SAHI's ratio; ours in pixels, ``int(ratio * tile)`` as SAHI computes it: the same windows).
Two comparisons, each labelled:

- **tiles + whole image**: SAHI as users call it by default (``perform_standard_pred=True``: the
  tiles, then the whole image resized to the tile size) against ours with scale 1 tiles plus the fit
  scale (the whole image, long side = tile size);
- **tiles only** (equal tile work): SAHI with ``perform_standard_pred=False`` against ours at scale 1.

SAHI wraps the detector with its own ``Detectron2DetectionModel(config_path, model_path,
image_size=tile)`` (a detectron2 ``DefaultPredictor``, one tile per forward, ``ResizeShortestEdge``
to the tile size = no resize of a full tile) and merges with its default GREEDYNMM/IOS 0.5. Ours is
what ``tools/infer.py`` runs: the prefetching pipeline (tiles cut in ``--workers`` data-loader
worker while the model runs, ``--batch`` tiles per forward; both default to the config's, as in
``tools/infer.py``), the model prepared by
``sniper_d2.inference.fast_model.prepare_for_inference`` (batch norms folded into the
convolutions, channels-last weights on the CPU, the backbone's weights in the precision), every size kept at every scale (no range filter),
SNIPER.TEST.MERGE_METHOD, SNIPER.TEST.PRECISION (default "auto": the backbone in bfloat16 on CPUs
with AMX-BF16 and on GPUs with bfloat16, float32 elsewhere; the heads always run in float32; SAHI's
DefaultPredictor runs float32). Also
timed: ours in float32 (the precision's share of the speed; its AP cost is measured by
benchmarks/precision_ap.py), ours with the model as loaded, and ours in one process at one tile per
forward (where the speed comes from). Both keep detections scoring >= ``--confidence``. The
variants alternate for ``--rounds`` rounds; each one's best round is printed.

SAHI is a benchmark-only dependency: ``pip install sahi`` (it is not needed to use sniper_d2).

Example:
    python benchmarks/bench_infer.py --weights output/demo/sniper/model_final.pth --side 2400
"""

import argparse
import atexit
import copy
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace

import cv2
import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
import sniper_d2.modeling  # noqa: E402,F401  (registers the SNIPER heads, for SAHI's DefaultPredictor too)
from sniper_d2.cli import setup_cfg  # noqa: E402
from sniper_d2.image_io import read_image  # noqa: E402
from sniper_d2.inference import MultiScaleTiledPredictor, TiledInferenceParams  # noqa: E402
from sniper_d2.inference.fast_model import prepare_for_inference  # noqa: E402
from sniper_d2.inference.pipeline import ImageTask, build_tile_loader, run_tiled_inference, tile_loader_workers  # noqa: E402
from sniper_d2.synthetic import SyntheticSpec, render_image  # noqa: E402
from results_store import add_results_argument, save_benchmark_results  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", default=os.path.join(ROOT, "configs/sniper_tiny_cpu.yaml"))
    p.add_argument("--weights", default="", help="trained weights (default: random weights, saved for SAHI)")
    p.add_argument("--side", type=int, default=2400, help="image side, px (default: %(default)s)")
    p.add_argument("--tile", type=int, default=512, help="tile side, px (default: %(default)s)")
    p.add_argument("--overlap", type=float, default=0.2, help="tile overlap ratio (default: %(default)s)")
    p.add_argument("--batch", type=int, default=None,
                   help="tiles per forward pass, ours (default: the config's SNIPER.TEST.TILE_BATCH_SIZE, as tools/infer.py)")
    p.add_argument("--workers", type=int, default=None,
                   help="data-loader workers cutting tiles, ours (default: the config's, as tools/infer.py: "
                        "SNIPER.TEST.NUM_WORKERS, -1 = 0 on the CPU)")
    p.add_argument("--confidence", type=float, default=0.3, help="score threshold, both (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=2, help="alternating timing rounds (default: %(default)s)")
    p.add_argument("--no-sahi", action="store_true", help="only ours, batched vs one tile at a time")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add_results_argument(p, "bench_infer")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    cfg = setup_cfg(args.config_file, ["MODEL.DEVICE", args.device, "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
                                       str(args.confidence)], purpose="read")
    model = build_model(cfg).eval()
    if args.batch is None:
        args.batch = int(cfg.SNIPER.TEST.TILE_BATCH_SIZE)
    if args.workers is None:
        args.workers = tile_loader_workers(cfg)
    work = tempfile.mkdtemp(prefix="bench_infer_")
    atexit.register(shutil.rmtree, work, True)  # weights, image and config written here
    weights = args.weights
    if weights:
        DetectionCheckpointer(model).load(weights)
    else:  # SAHI loads weights from a file: give it exactly these random ones
        weights = os.path.join(work, "random_init.pth")
        torch.save({"model": model.state_dict()}, weights)
    overlap_px = int(args.overlap * args.tile)
    base = replace(TiledInferenceParams.from_cfg(cfg), tile_size=args.tile, fit_size=args.tile,
                   tile_overlap=overlap_px, score_thresh=args.confidence, tile_batch_size=args.batch)
    # "tiles + whole image": scale 1 tiles plus the fit scale (SAHI's default perform_standard_pred=True);
    # "tiles only": scale 1 tiles (SAHI's perform_standard_pred=False). No range filter at either scale.
    params = {"whole": replace(base, scales=(1.0, -1.0), valid_ranges=((0.0, -1.0), (0.0, -1.0))),
              "tiles": replace(base, scales=(1.0,), valid_ranges=((0.0, -1.0),))}
    spec = SyntheticSpec(num_images=1, min_side_px=args.side, max_side_px=args.side, seed=7)
    image_path = os.path.join(work, "scene.jpg")
    cv2.imwrite(image_path, render_image(spec, 0)[0], [cv2.IMWRITE_JPEG_QUALITY, 95])
    # Ours runs the model as tools/infer.py does: batch norms folded, channels-last weights on the CPU,
    # the backbone's weights in the precision.
    fast = prepare_for_inference(copy.deepcopy(model), precision=base.precision)
    predictors = {k: MultiScaleTiledPredictor(fast, v) for k, v in params.items()}
    n_tiles = {k: sum(len(w) for _, _, w in p.scale_windows((args.side, args.side))) for k, p in predictors.items()}

    def pipeline(predictor):
        loader = build_tile_loader([ImageTask(0, image_path)], predictor, cfg.INPUT.FORMAT, num_workers=args.workers)
        return sum(len(det["boxes"]) for _, det, _, _ in run_tiled_inference(predictor, loader))

    def sync():
        if args.device == "cuda":
            torch.cuda.synchronize()

    def timed(fn):
        sync()
        start = time.perf_counter()
        out = fn()
        sync()
        return time.perf_counter() - start, out

    # Every variant reads the JPEG itself: decoding is part of the work.
    ours = {"whole": f"ours, tiles + whole image ({args.workers} worker, {args.batch}/forward)",
            "tiles": f"ours, tiles only ({args.workers} worker, {args.batch}/forward)"}
    variants = {ours[k]: (lambda p=p: pipeline(p)) for k, p in predictors.items()}
    as_loaded = MultiScaleTiledPredictor(model, params["tiles"])
    variants["ours, tiles only, model as loaded (no folding, NCHW)"] = lambda: pipeline(as_loaded)
    fp32_name = f"ours, tiles only, fp32 ({args.workers} worker, {args.batch}/forward)"
    if predictors["tiles"].precision != "fp32":
        fp32 = MultiScaleTiledPredictor(prepare_for_inference(copy.deepcopy(model)), replace(params["tiles"], precision="fp32"))
        variants[fp32_name] = lambda: pipeline(fp32)
    one = MultiScaleTiledPredictor(fast, replace(params["tiles"], tile_batch_size=1))
    variants["ours, tiles only, in one process, 1/forward"] = lambda: len(one(read_image(image_path))["boxes"])
    sahi_names = {"whole": "SAHI get_sliced_prediction, default (perform_standard_pred=True: tiles + whole image)",
                  "tiles": "SAHI get_sliced_prediction, tiles only (perform_standard_pred=False)"}
    if not args.no_sahi:
        try:
            from sahi.models.detectron2 import Detectron2DetectionModel
            from sahi.predict import get_sliced_prediction
        except ImportError:
            sys.exit("bench_infer.py: error: SAHI is not installed (pip install sahi), or pass --no-sahi")
        cfg_path = os.path.join(work, "config.yaml")
        with open(cfg_path, "w") as f:
            f.write(cfg.dump())
        # SAHI's own detectron2 wrapper: a DefaultPredictor built from the config file and weights file,
        # its input resized to image_size (= the tile size: no resize of a full tile).
        sahi_model = Detectron2DetectionModel(config_path=cfg_path, model_path=weights, confidence_threshold=args.confidence,
                                              image_size=args.tile, device=args.device)

        def sahi(standard):
            result = get_sliced_prediction(image_path, sahi_model, slice_height=args.tile, slice_width=args.tile,
                                           overlap_height_ratio=args.overlap, overlap_width_ratio=args.overlap,
                                           perform_standard_pred=standard, verbose=0)
            return len(result.object_prediction_list)

        variants[sahi_names["whole"]] = lambda: sahi(True)
        variants[sahi_names["tiles"]] = lambda: sahi(False)
    for fn in variants.values():  # warm-up
        fn()
    best, found = {}, {}
    for _ in range(args.rounds):  # alternate, keep each one's best round: a busy machine biases none
        for name, fn in variants.items():
            seconds, n = timed(fn)
            best[name] = min(best.get(name, float("inf")), seconds)
            found[name] = n
    print(f"{args.device}, {torch.get_num_threads()} threads: one {args.side}x{args.side} image, tiles {args.tile} px, "
          f"overlap {overlap_px} px ({n_tiles['tiles']} tiles, + 1 whole-image pass), weights "
          f"{args.weights or 'random'}; ours in {predictors['tiles'].precision} (SNIPER.TEST.PRECISION "
          f"{base.precision!r}); best of {args.rounds} alternating rounds")
    for name, seconds in best.items():
        print(f"  {name:<88s} {seconds:7.2f} s/image  ({found[name]:4d} detections)")
    if not args.no_sahi:
        for k, what in (("whole", "tiles + whole image (SAHI's default)"), ("tiles", "tiles only (equal tile work)")):
            print(f"  {what}: ours {best[sahi_names[k]] / best[ours[k]]:.2f}x the speed of SAHI")
        if fp32_name in best:
            print(f"  tiles only, ours in fp32: {best[sahi_names['tiles']] / best[fp32_name]:.2f}x the speed of SAHI")
    print(f"  ours batched vs one tile per forward, tiles only: "
          f"{best['ours, tiles only, in one process, 1/forward'] / best[ours['tiles']]:.2f}x; "
          f"prepared model vs as loaded: "
          f"{best['ours, tiles only, model as loaded (no folding, NCHW)'] / best[ours['tiles']]:.2f}x"
          + (f"; {predictors['tiles'].precision} vs fp32: {best[fp32_name] / best[ours['tiles']]:.2f}x"
             if fp32_name in best else ""))
    figures = {"side_px": args.side, "tile_px": args.tile, "overlap": args.overlap, "weights": args.weights or "random",
               "precision": predictors["tiles"].precision, "rounds": args.rounds,
               "seconds_per_image": best, "detections": found}
    if not args.no_sahi:
        figures["speed_vs_sahi"] = {k: best[sahi_names[k]] / best[ours[k]] for k in ("whole", "tiles")}
    save_benchmark_results("bench_infer", figures, args.results)


if __name__ == "__main__":
    main()
