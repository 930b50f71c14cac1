#!/usr/bin/env python
"""SNIPER training and evaluation script, in the shape of detectron2's project train_net.py.

With ``SNIPER.ENABLED True`` the model trains on chips from a chip plan (computed first if no plan
matches the data and config) with ignore-aware RPN/ROI heads, and evaluates with multi-scale tiled
inference. With ``SNIPER.ENABLED False`` it is a stock single-scale detectron2 Faster R-CNN, which is
how the baselines are trained.

Examples:
    python train_net.py --config-file configs/sniper_tiny_cpu.yaml --num-gpus 1
    python train_net.py --config-file configs/sniper_r50_fpn.yaml --num-gpus 4
    python train_net.py --config-file configs/sniper_r50_fpn.yaml --eval-only MODEL.WEIGHTS out/model_final.pth
    python train_net.py --config-file configs/sniper_r50_fpn.yaml --num-gpus 4 --resume
"""

import logging
import os
import sys

import detectron2.utils.comm as comm
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import build_detection_train_loader
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup
from detectron2.evaluation import COCOEvaluator
from detectron2.utils.logger import setup_logger

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sniper_d2.modeling  # noqa: E402,F401  (registers SniperRPN and SniperROIHeads)
from sniper_d2.config import add_sniper_config, check_runtime_config  # noqa: E402
from sniper_d2.data.build import build_sniper_train_loader  # noqa: E402
from sniper_d2.data.datasets import register_datasets_from_cfg  # noqa: E402
from sniper_d2.data.mapper import SniperDatasetMapper  # noqa: E402
from sniper_d2.engine import run_cli  # noqa: E402
from sniper_d2.results import save_eval_results  # noqa: E402
from sniper_d2.evaluation import build_sniper_evaluator, has_fast_coco_eval, sniper_inference_model  # noqa: E402
from sniper_d2.weights import resolve_weights  # noqa: E402


class Trainer(DefaultTrainer):
    """DefaultTrainer that trains on SNIPER chips and evaluates with tiled multi-scale inference."""

    @classmethod
    def build_train_loader(cls, cfg, start_iter=0):
        if not cfg.SNIPER.ENABLED:
            return build_detection_train_loader(cfg)
        return build_sniper_train_loader(cfg, SniperDatasetMapper(cfg, is_train=True), start_iter)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        if cfg.SNIPER.ENABLED:
            return build_sniper_evaluator(cfg, dataset_name, output_folder)
        return COCOEvaluator(dataset_name, output_dir=output_folder,
                             max_dets_per_image=cfg.SNIPER.TEST.MAX_DETECTIONS,
                             use_fast_impl=has_fast_coco_eval())

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        if cfg.SNIPER.ENABLED:
            model = sniper_inference_model(cfg, model)
        results = super().test(cfg, model, evaluators)
        if len(cfg.DATASETS.TEST) == 1 and cfg.DATASETS.TEST[0] not in results:
            results = {cfg.DATASETS.TEST[0]: results}  # detectron2 un-nests a single data set's results
        if comm.is_main_process():
            save_eval_results(os.path.join(cfg.OUTPUT_DIR, "eval_results.json"), results, cfg)
        return results

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        if cfg.SNIPER.ENABLED:
            from sniper_d2.evaluation import build_sniper_test_loader

            return build_sniper_test_loader(cfg, dataset_name)
        return super().build_test_loader(cfg, dataset_name)

    def resume_or_load(self, resume=True):
        super().resume_or_load(resume=resume)
        if self.start_iter > 0 and self.cfg.SNIPER.ENABLED:
            # Continue the chip sequence where the interrupted run stopped.
            loader = self.build_train_loader(self.cfg, start_iter=self.start_iter)
            self._trainer.data_loader = loader
            self._trainer._data_loader_iter = iter(loader)


def setup(args):
    """Create the config (base + SNIPER keys + file + command line), register data sets."""
    cfg = get_cfg()
    add_sniper_config(cfg)
    if not os.path.isfile(args.config_file):
        raise FileNotFoundError(f"config file {args.config_file} not found")
    try:
        cfg.merge_from_file(args.config_file)
    except KeyError as e:
        raise KeyError(f"{args.config_file}: unknown config key: {e.args[0] if e.args else e}; "
                       "see sniper_d2/config.py for the SNIPER.* keys") from e
    try:
        cfg.merge_from_list(args.opts)
    except (KeyError, AssertionError) as e:  # yacs asserts on unknown keys given on the command line
        raise KeyError(f"command-line config override: {e.args[0] if e.args else e}") from e
    check_runtime_config(cfg, torch.cuda.is_available())
    cfg.MODEL.WEIGHTS = resolve_weights(cfg.MODEL.WEIGHTS)
    cfg.freeze()
    default_setup(cfg, args)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="sniper_d2", abbrev_name="sniper")
    register_datasets_from_cfg(cfg)
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        res = Trainer.test(cfg, model)
        if comm.is_main_process():
            logging.getLogger("sniper_d2").info(f"evaluation results: {dict(res)}")
        return res
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    run_cli(main, args, "train_net.py")
