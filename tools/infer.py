#!/usr/bin/env python
r"""Run a SNIPER model on images or folders: detections drawn on each image, plus one COCO results json.

Multi-scale tiled inference as in evaluation (cfg.SNIPER.TEST: scales, tiles, merge), tiles prepared
in data-loader workers (SNIPER.TEST.NUM_WORKERS; by default on a GPU only) while the model runs; huge images are read by windows
(tiled TIFF) or decoded once (other formats), never held twice. ``--num-gpus N`` runs N processes
(GPUs with detectron2's launch; without a GPU, N CPU processes joined by gloo), each on every N-th
image; one results.json comes out, the same as with one process. Several machines: run the same
command on each with --num-machines M, its own --machine-rank (0 .. M-1) and the same --dist-url
(tcp://<address of machine 0>:<free port>), and an --output folder every machine sees (shared file
system): the images are split over all M * N processes. Unreadable files are skipped with
a warning naming them, and counted. Written to --output:
  <stem>.jpg           each image with its detections (score >= --confidence-threshold) drawn, at most
                       --draw-max-side px on its long side ("<stem>_2.jpg", ... when two inputs share a stem);
  results.json         COCO "results" format, written atomically: a list of {"image_id" (1-based
                       position in the input list), "file_name", "category_id" (the data set's ids when
                       the config's data set is registered, else contiguous), "bbox" XYWH original
                       pixels, "score"}, detections with score >= --confidence-threshold;
  results_meta.json    sidecar (sniper_d2.io artifact, format "sniper_d2.infer_results", version 1):
                       weights, config file, images, skipped files, detections, threshold, and
                       "pixels_per_scale": {file: pixels through the detector per SNIPER.TEST.SCALES entry};
  <stem>.geojson       for each georeferenced input (a GeoTIFF with a CRS and a geotransform): its
                       detections as map polygons (properties class, score, pixel box x0 y0 x1 y1), in
                       the raster's CRS or --vector-crs; <stem>.gpkg with --vector-format gpkg;
  <stem>_focus.jpg     with --draw-focus (SNIPER.TEST.MODE "autofocus"): the focus maps (red) and the
                       focus chips of each finer scale (boxes labelled with the scale) over the image;
  partial/             while running: each process's results so far, one JSON line appended per image
                       (flushed at once, fsync every --fsync-every images; a line torn by a kill is
                       run again); ``--resume`` skips the images they hold. Merged and removed at the end.

Examples:
    python tools/infer.py --config-file configs/sniper_tiny_cpu.yaml --input datasets/synthetic/images \
        --output output/drawn MODEL.WEIGHTS output/demo/sniper/model_final.pth
    python tools/infer.py --config-file configs/sniper_r50_fpn.yaml --input 'photos/*.jpg' --num-gpus 4 \
        --output output/drawn --confidence-threshold 0.5 --resume MODEL.WEIGHTS model_final.pth
    # two machines, 8 GPUs each, /shared visible from both (on machine 1: --machine-rank 1)
    python tools/infer.py --config-file configs/sniper_r50_fpn.yaml --input /shared/photos --num-gpus 8 \
        --num-machines 2 --machine-rank 0 --dist-url tcp://10.0.0.1:29500 --output /shared/out \
        MODEL.WEIGHTS model_final.pth
"""

import argparse
import glob
import logging
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from sniper_d2.cli import parse_with_overrides, run_cli, run_main, setup_cfg  # noqa: E402

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
logger = logging.getLogger("sniper_d2.infer")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, help="detectron2 yaml config with a SNIPER section")
    p.add_argument("--input", required=True, nargs="+", help="image files, folders or glob patterns")
    p.add_argument("--output", required=True, help="folder for drawn images and results.json")
    p.add_argument("--confidence-threshold", type=float, default=0.5,
                   help="draw and save detections at least this confident (default: %(default)s)")
    p.add_argument("--no-draw", action="store_true", help="only write results.json")
    p.add_argument("--draw-focus", action="store_true",
                   help="with SNIPER.TEST.MODE autofocus: also write <stem>_focus.jpg, where the model zoomed in")
    p.add_argument("--draw-max-side", type=int, default=4096,
                   help="drawn images are reduced to at most this long side, px (default: %(default)s)")
    p.add_argument("--vector-format", choices=("geojson", "gpkg", "none"), default="geojson",
                   help="vector file of each georeferenced input's detections (default: %(default)s)")
    p.add_argument("--vector-crs", default=None,
                   help="CRS of the vector files, e.g. EPSG:4326 for RFC 7946 GeoJSON (default: the raster's)")
    p.add_argument("--num-gpus", type=int, default=1,
                   help="processes per machine: one per GPU, or CPU processes joined by gloo without a GPU "
                        "(default: %(default)s)")
    p.add_argument("--num-machines", type=int, default=1, help="machines running this command (default: %(default)s)")
    p.add_argument("--machine-rank", type=int, default=0, help="this machine's rank, 0 .. --num-machines - 1")
    p.add_argument("--dist-url", default="auto",
                   help="process group address, the same on every machine: tcp://<machine 0>:<port> "
                        "(default: a free local port; one machine only)")
    p.add_argument("--resume", action="store_true",
                   help="skip the images already in --output/partial (an interrupted run of the same command)")
    p.add_argument("--fsync-every", "--save-every", dest="fsync_every", type=int, default=8,
                   help="images between two fsyncs of each process's partial results; each image is "
                        "flushed at once (default: %(default)s)")
    p.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="config overrides, KEY VALUE pairs")
    args = parse_with_overrides(p, argv)
    if args.num_machines < 1 or not 0 <= args.machine_rank < args.num_machines:
        p.error(f"--machine-rank {args.machine_rank} is not in 0 .. {args.num_machines - 1} (--num-machines)")
    if args.vector_crs is not None:
        from pyproj.exceptions import CRSError

        from sniper_d2.geo import crs_name

        try:
            crs_name(args.vector_crs)
        except CRSError as e:
            p.error(f"--vector-crs {args.vector_crs}: not a CRS ({e})")
    if args.num_machines > 1 and args.dist_url == "auto":
        p.error("--num-machines > 1 needs --dist-url tcp://<address of machine 0>:<port>, the same on every machine")
    return args


def list_inputs(patterns):
    """Expand files, folders (their images, sorted) and globs, in order, without repeats; a pattern
    matching nothing is an error."""
    files = []
    for pattern in patterns:
        if os.path.isdir(pattern):
            found = sorted(os.path.join(pattern, f) for f in os.listdir(pattern) if f.lower().endswith(IMAGE_EXTENSIONS))
        elif os.path.isfile(pattern):
            found = [pattern]
        else:
            found = sorted(glob.glob(pattern))
        if not found:
            raise FileNotFoundError(f"--input {pattern}: no such file, or no image in it")
        files += found
    return list(dict.fromkeys(files))  # a file named twice is run once


def infer(args):
    """One process's work (every process runs it; see sniper_d2.inference.folder)."""
    from detectron2.utils import comm
    from detectron2.utils.logger import setup_logger

    from sniper_d2.config_types import ConfigError
    from sniper_d2.inference import MultiScaleTiledPredictor, TiledInferenceParams
    from sniper_d2.inference.fast_model import build_inference_model
    from sniper_d2.inference.folder import VectorOutput, infer_files
    from sniper_d2.inference.pipeline import tile_loader_workers

    setup_logger(name="sniper_d2", distributed_rank=comm.get_rank())
    cfg = setup_cfg(args.config_file, args.opts, purpose="infer")
    if args.draw_focus and cfg.SNIPER.TEST.MODE != "autofocus":
        raise ConfigError("--draw-focus needs SNIPER.TEST.MODE autofocus (and a model with a focus head)")
    files = list_inputs(args.input)
    # weights loaded, eval mode, batch norms folded, channels-last on CPU, backbone in TEST.PRECISION
    model = build_inference_model(cfg)
    class_names, to_dataset_id = _categories(cfg)
    vector = None if args.vector_format == "none" else VectorOutput(
        "." + args.vector_format, args.vector_crs,
        {to_dataset_id.get(k, k): name for k, name in enumerate(class_names)})
    summary = infer_files(MultiScaleTiledPredictor(model, TiledInferenceParams.from_cfg(cfg)), files, args.output, cfg,
                          confidence_threshold=args.confidence_threshold, to_dataset_id=to_dataset_id,
                          class_names=class_names, draw=not args.no_draw, draw_max_side=args.draw_max_side,
                          resume=args.resume, fsync_every=args.fsync_every, num_workers=tile_loader_workers(cfg),
                          draw_focus=args.draw_focus, meta={"config_file": args.config_file}, vector=vector)
    if summary is not None:
        skipped = summary["skipped"]
        total = [sum(v[k] for v in summary["pixels_per_scale"].values()) for k in range(len(cfg.SNIPER.TEST.SCALES))]
        logger.info(f"pixels through the detector per scale {tuple(float(s) for s in cfg.SNIPER.TEST.SCALES)} "
                    f"({cfg.SNIPER.TEST.MODE}): {', '.join(f'{v / 1e6:.1f} M' for v in total)}")
        logger.info(f"{summary['images']} images, {summary['detections']} detections -> {args.output}/results.json"
                    + (f"; skipped {len(skipped)} unreadable: {', '.join(skipped)}" if skipped else ""))


def _categories(cfg):
    """(class names by contiguous id, {contiguous id: data set category id}) from the config's data sets
    (registered by setup_cfg's start-up checks, those whose files are present)."""
    from detectron2.data import MetadataCatalog

    names = list(cfg.DATASETS.TEST) or list(cfg.DATASETS.TRAIN)
    meta = MetadataCatalog.get(names[0]) if names else None
    classes = (meta.get("thing_classes", None) if meta else None) or \
        [str(i) for i in range(cfg.MODEL.ROI_HEADS.NUM_CLASSES)]
    id_map = (meta.get("thing_dataset_id_to_contiguous_id", None) if meta else None) or {}
    return classes, {v: k for k, v in id_map.items()}


def main(argv=None):
    """Parse the command line; run in this process, or on --num-gpus processes on each of --num-machines."""
    args = parse_args(argv)
    if args.num_gpus * args.num_machines <= 1:
        return infer(args)
    if args.dist_url == "auto":
        from sniper_d2.engine import free_local_dist_url

        args.dist_url = free_local_dist_url()
    return run_cli(infer, args, "infer.py")


if __name__ == "__main__":
    run_main(main, "infer.py")
