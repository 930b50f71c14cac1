#!/usr/bin/env python
"""One-command GPU check: R50-FPN SNIPER training with AMP, then tiled inference (< 8 min on one GPU).

On a GPU:
  1. writes a small synthetic data set (32 training, 6 validation images of 700-1200 px);
  2. configs/sniper_r50_fpn.yaml with that data registered, random init (ResNet BN, gradient
     clipping), 512 px chips, SOLVER.AMP.ENABLED (detectron2's AMPTrainer: CUDA autocast + GradScaler);
  3. finds the largest chip batch that fits: two AMP forward/backward steps per candidate
     (128, 96, 64, ...) on real chips, keeping the largest whose peak stays under 85% of the GPU;
  4. trains --iters iterations (train_net.py's Trainer) and prints chips/s per GPU (after a
     warm-up of 20 iterations) and peak GPU memory;
  5. runs multi-scale tiled inference on the validation images (images/s) and times
     merge_detections on CUDA (4,000 boxes: nms, nested_nms, soft_nms; ms).

``--smoke`` runs the same steps on the CPU in seconds (2 iterations of 2 chips of 256 px, no AMP,
one test scale): the test suite calls it so the script cannot rot while no GPU is at hand.

Examples:
    python benchmarks/gpu_check.py                 # on a machine with a GPU
    python benchmarks/gpu_check.py --smoke         # anywhere
"""

import argparse
import logging
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

BATCH_CANDIDATES = (128, 96, 64, 48, 32, 24, 16, 8, 4, 2)
WARMUP_ITERS = 20


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="a few seconds on the CPU (what the tests run)")
    p.add_argument("--iters", type=int, default=200, help="training iterations (default: %(default)s)")
    p.add_argument("--output", default=None, help="work folder (default: a temporary one)")
    return p.parse_args(argv)


def build_cfg(args, data_dir, out_dir, batch):
    """configs/sniper_r50_fpn.yaml on the synthetic data, random init; smaller and on the CPU for --smoke."""
    from sniper_d2.cli import setup_cfg

    train, val = (os.path.join(data_dir, f"{s}.json") for s in ("train", "val"))
    iters = 2 if args.smoke else args.iters
    return setup_cfg(os.path.join(ROOT, "configs", "sniper_r50_fpn.yaml"), [
        "SNIPER.REGISTER_COCO", f'(("gpu_check_train", "{train}", ""), ("gpu_check_val", "{val}", ""))',
        "DATASETS.TRAIN", '("gpu_check_train",)', "DATASETS.TEST", '("gpu_check_val",)',
        "MODEL.WEIGHTS", "", "MODEL.ROI_HEADS.NUM_CLASSES", "3", "MODEL.RESNETS.NORM", "BN",
        "MODEL.DEVICE", "cpu" if args.smoke else "cuda",
        "SOLVER.AMP.ENABLED", str(not args.smoke),
        "SOLVER.IMS_PER_BATCH", str(batch), "SOLVER.BASE_LR", "0.01", "SOLVER.MAX_ITER", str(iters),
        "SOLVER.STEPS", "()", "SOLVER.WARMUP_ITERS", str(min(50, iters)), "SOLVER.CHECKPOINT_PERIOD", str(10 * iters),
        "SOLVER.CLIP_GRADIENTS.ENABLED", "True", "SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "norm",
        "SOLVER.CLIP_GRADIENTS.CLIP_VALUE", "5.0",
        # The synthetic images are 700-1200 px with objects of 6-400 px: the tiny config's scales.
        "SNIPER.SCALES", "(2.0, 1.0, -1.0)", "SNIPER.VALID_RANGES", "((0.0, 40.0), (24.0, 160.0), (128.0, -1.0))",
        "SNIPER.CHIP_SIZE", "256" if args.smoke else "512", "SNIPER.PLAN.NUM_WORKERS", "1" if args.smoke else "4",
        "SNIPER.TEST.SCALES", "(-1.0,)" if args.smoke else "(2.0, 1.0, -1.0)",
        "SNIPER.TEST.VALID_RANGES", "((0.0, -1.0),)" if args.smoke else "((0.0, 48.0), (20.0, 112.0), (80.0, -1.0))",
        "SNIPER.TEST.TILE_SIZE", "512", "SNIPER.TEST.TILE_OVERLAP", "128", "SNIPER.TEST.TILE_BATCH_SIZE", "8",
        "DATALOADER.NUM_WORKERS", "0" if args.smoke else str(min(8, os.cpu_count() or 1)),
        "OUTPUT_DIR", out_dir,
    ], purpose="read")


def probe_batch(cfg, candidates):
    """Largest chip batch (from ``candidates``) whose AMP training step peaks under 85% of the GPU.

    Two forward/backward steps under detectron2's AMP recipe (autocast + GradScaler) on real chips
    from the chip loader (CPU: bfloat16 autocast, no scaler). Returns (batch, peak bytes or None on the CPU).
    """
    import torch
    from detectron2.modeling import build_model
    from detectron2.utils.events import EventStorage

    from sniper_d2.data.build import build_sniper_train_loader
    from sniper_d2.data.mapper import SniperDatasetMapper

    cuda = cfg.MODEL.DEVICE.startswith("cuda")
    probe_cfg = cfg.clone()
    probe_cfg.defrost()
    probe_cfg.SOLVER.IMS_PER_BATCH = max(candidates)
    chips = next(iter(build_sniper_train_loader(probe_cfg, SniperDatasetMapper(probe_cfg, is_train=True))))
    model = build_model(cfg)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda", enabled=cuda and cfg.SOLVER.AMP.ENABLED)
    limit = 0.85 * torch.cuda.get_device_properties(0).total_memory if cuda else None
    for batch in sorted(candidates, reverse=True):
        try:
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            # On the CPU (smoke) the probe runs one step on one chip under CPU autocast (bfloat16), so
            # mixed-precision dtype mismatches in the SNIPER heads show up without a GPU; more would
            # take minutes on CPUs without native bfloat16 (no AMX), where bf16 convolutions are emulated.
            for _ in range(2 if cuda else 1):
                with EventStorage(), torch.autocast("cuda" if cuda else "cpu", dtype=torch.float16 if cuda else torch.bfloat16,
                                                    enabled=cfg.SOLVER.AMP.ENABLED or not cuda):
                    losses = sum(model(chips[:batch] if cuda else chips[:1]).values())
                optimizer.zero_grad()
                scaler.scale(losses).backward()
                scaler.step(optimizer)
                scaler.update()
            peak = torch.cuda.max_memory_allocated() if cuda else None
            if peak is None or peak < limit:
                del model, optimizer, losses
                if cuda:
                    torch.cuda.empty_cache()
                return batch, peak
        except torch.cuda.OutOfMemoryError:
            losses = None
        optimizer.zero_grad(set_to_none=True)
    raise RuntimeError(f"no chip batch of {candidates} fits on this GPU")


def train(cfg):
    """train_net.py's Trainer for cfg.SOLVER.MAX_ITER; (chips/s after the warm-up, peak GPU bytes or None)."""
    import torch
    from detectron2.engine import HookBase

    from sniper_d2.data.datasets import register_datasets_from_cfg
    from train_net import Trainer

    class Clock(HookBase):
        """Wall time at the end of each iteration (after the GPU finished it)."""

        def __init__(self, sync):
            self.sync, self.times = sync, {}

        def after_step(self):
            self.sync()
            self.times[self.trainer.iter] = time.perf_counter()

    register_datasets_from_cfg(cfg)
    cuda = cfg.MODEL.DEVICE.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    clock = Clock(torch.cuda.synchronize if cuda else (lambda: None))
    trainer.register_hooks([clock])
    trainer.train()
    last = cfg.SOLVER.MAX_ITER - 1
    first = min(WARMUP_ITERS, last - 1) if last > 1 else 0
    seconds = clock.times[last] - clock.times[first]
    chips_per_s = cfg.SOLVER.IMS_PER_BATCH * (last - first) / max(seconds, 1e-9)
    return trainer, chips_per_s, (torch.cuda.max_memory_allocated() if cuda else None)


def infer(cfg, model):
    """Tiled inference over the validation images: images/s, and merge ms on the model's device."""
    import torch
    from detectron2.data import DatasetCatalog

    from bench_merge import random_detections
    from sniper_d2.image_io import read_image
    from sniper_d2.inference import MultiScaleTiledPredictor, TiledInferenceParams, merge_detections

    cuda = cfg.MODEL.DEVICE.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    model.eval()
    predictor = MultiScaleTiledPredictor(model, TiledInferenceParams.from_cfg(cfg))
    images = [read_image(d["file_name"]) for d in DatasetCatalog.get(cfg.DATASETS.TEST[0])]
    predictor(images[0])  # warm-up (cuDNN autotuning, allocator)
    sync()
    start = time.perf_counter()
    n_det = sum(len(predictor(image)["boxes"]) for image in images)
    sync()
    images_per_s = len(images) / (time.perf_counter() - start)
    boxes, scores, classes = (torch.as_tensor(a).to(cfg.MODEL.DEVICE) for a in random_detections(4000))
    merge_ms = {}
    for method in ("nms", "nested_nms", "soft_nms"):
        merge_detections(boxes, scores, classes, method)
        sync()
        start = time.perf_counter()
        for _ in range(5):
            merge_detections(boxes, scores, classes, method)
        sync()
        merge_ms[method] = (time.perf_counter() - start) / 5 * 1000
    return len(images), images_per_s, n_det, merge_ms


def main(argv=None):
    args = parse_args(argv)
    import torch
    from detectron2.utils.logger import setup_logger

    import sniper_d2.modeling  # noqa: F401  (registers the SNIPER heads)
    from sniper_d2.synthetic import SyntheticSpec, make_synthetic_dataset

    if not args.smoke and not torch.cuda.is_available():
        sys.exit("gpu_check.py: error: no CUDA device; run with --smoke for the CPU check")
    setup_logger(name="sniper_d2")
    for name in ("detectron2", "d2"):
        logging.getLogger(name).setLevel(logging.WARNING)
    work = args.output or tempfile.mkdtemp(prefix="gpu_check_")
    data = os.path.join(work, "data")
    small = dict(min_side_px=400, max_side_px=500, min_object_px=8, max_object_px=200) if args.smoke else {}
    make_synthetic_dataset(data, "train", SyntheticSpec(num_images=4 if args.smoke else 32, seed=0,
                                                         **(small or dict(min_side_px=700, max_side_px=1200))),
                           progress=False)
    make_synthetic_dataset(data, "val", SyntheticSpec(num_images=1 if args.smoke else 6, seed=1000,
                                                      **(small or dict(min_side_px=700, max_side_px=1200))),
                           progress=False)

    candidates = (2,) if args.smoke else BATCH_CANDIDATES
    cfg = build_cfg(args, data, os.path.join(work, "train"), max(candidates))
    from sniper_d2.data.datasets import register_datasets_from_cfg

    register_datasets_from_cfg(cfg)
    batch, probe_peak = probe_batch(cfg, candidates)
    cfg = build_cfg(args, data, os.path.join(work, "train"), batch)
    device = torch.cuda.get_device_name(0) if not args.smoke else "CPU (smoke)"
    print(f"device: {device}; chip batch {batch} (largest of {candidates} under 85% of memory"
          + (f", probe peak {probe_peak / 2**30:.1f} GiB)" if probe_peak else ")"), flush=True)

    trainer, chips_per_s, peak = train(cfg)
    print(f"training: {cfg.SOLVER.MAX_ITER} iterations, {batch} chips of {cfg.SNIPER.CHIP_SIZE} px, "
          f"AMP {cfg.SOLVER.AMP.ENABLED}: {chips_per_s:.1f} chips/s per GPU (after iteration "
          f"{min(WARMUP_ITERS, cfg.SOLVER.MAX_ITER - 2)}); peak GPU memory "
          + (f"{peak / 2**30:.2f} GiB" if peak is not None else "n/a (CPU)"), flush=True)
    n_images, images_per_s, n_det, merge_ms = infer(cfg, trainer.model)
    print(f"tiled inference: {n_images} images, scales {tuple(cfg.SNIPER.TEST.SCALES)}, tiles "
          f"{cfg.SNIPER.TEST.TILE_SIZE} px: {images_per_s:.2f} images/s ({n_det} detections)")
    print("merge of 4,000 boxes on " + cfg.MODEL.DEVICE + ": "
          + ", ".join(f"{m} {ms:.2f} ms" for m, ms in merge_ms.items()))
    return {"batch": batch, "chips_per_s": chips_per_s, "peak_bytes": peak, "images_per_s": images_per_s,
            "merge_ms": merge_ms}


if __name__ == "__main__":
    main()
