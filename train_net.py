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
from collections import OrderedDict

import detectron2.utils.comm as comm
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import build_detection_train_loader
from detectron2.engine import DefaultTrainer, default_argument_parser
from detectron2.evaluation import COCOEvaluator, DatasetEvaluator, print_csv_format

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sniper_d2.modeling  # noqa: E402,F401  (registers SniperRPN and SniperROIHeads)
from sniper_d2.cli import run_cli, setup_cfg  # noqa: E402
from sniper_d2.data.build import ResumableTrainLoader, build_sniper_train_loader  # noqa: E402
from sniper_d2.data.mapper import SniperDatasetMapper  # noqa: E402
from sniper_d2.inference.evaluation import (build_sniper_evaluator, has_fast_coco_eval,  # noqa: E402
                                            run_sniper_inference_on_dataset)
from sniper_d2.inference.fast_model import build_inference_model  # noqa: E402
from sniper_d2.results import save_eval_results  # noqa: E402
from sniper_d2.weights import checkpoint_read_errors  # noqa: E402


class Trainer(DefaultTrainer):
    """DefaultTrainer that trains on SNIPER chips and evaluates with tiled multi-scale inference."""

    @classmethod
    def build_train_loader(cls, cfg):
        """The chip loader, built when training asks for its first batch, at the iteration that
        :meth:`resume_or_load` found (stock detectron2 loader when SNIPER is disabled)."""
        if not cfg.SNIPER.ENABLED:
            return build_detection_train_loader(cfg)
        mapper = SniperDatasetMapper(cfg, is_train=True)
        return ResumableTrainLoader(lambda start_iter: build_sniper_train_loader(cfg, mapper, start_iter))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        if cfg.SNIPER.ENABLED:
            return build_sniper_evaluator(cfg, dataset_name, output_folder)
        return COCOEvaluator(dataset_name, output_dir=output_folder,
                             max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE,
                             use_fast_impl=has_fast_coco_eval())

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """With SNIPER, every data set goes through the tiled-inference pipeline that tools/infer.py
        runs (``run_sniper_inference_on_dataset``), into ``evaluators[i]`` when given (detectron2's
        contract: one per ``DATASETS.TEST`` entry, or one evaluator for a single data set)."""
        if not cfg.SNIPER.ENABLED:
            results = super().test(cfg, model, evaluators)
        else:
            if isinstance(evaluators, DatasetEvaluator):
                evaluators = [evaluators]
            if evaluators is not None and len(evaluators) != len(cfg.DATASETS.TEST):
                raise ValueError(f"{len(cfg.DATASETS.TEST)} test data sets but {len(evaluators)} evaluators")
            results = OrderedDict()
            for idx, name in enumerate(cfg.DATASETS.TEST):
                results[name] = run_sniper_inference_on_dataset(
                    cfg, model, name, os.path.join(cfg.OUTPUT_DIR, "inference", name),
                    evaluator=evaluators[idx] if evaluators is not None else None)
                if comm.is_main_process():
                    logging.getLogger("sniper_d2").info(f"Evaluation results for {name} in csv format:")
                    print_csv_format(results[name])
        if len(cfg.DATASETS.TEST) == 1 and cfg.DATASETS.TEST[0] not in results:
            results = {cfg.DATASETS.TEST[0]: results}  # detectron2 un-nests a single data set's results
        if comm.is_main_process():
            save_eval_results(os.path.join(cfg.OUTPUT_DIR, "eval_results.json"), results, cfg)
        return results

    def resume_or_load(self, resume=True):
        resuming = resume and self.checkpointer.has_checkpoint()
        path = self.checkpointer.get_checkpoint_file() if resuming else self.cfg.MODEL.WEIGHTS
        with checkpoint_read_errors(path):  # a file that is not a checkpoint: one line naming it
            super().resume_or_load(resume=resume)
        # DefaultTrainer.data_loader: the loader handed to its SimpleTrainer (a public property).
        if isinstance(self.data_loader, ResumableTrainLoader):
            self.data_loader.start_at(self.start_iter)  # continue the chip sequence where the checkpoint stopped


def setup(args):
    """The config (base + SNIPER keys + file + command line, checked), detectron2's set-up, data sets."""
    return setup_cfg(args.config_file, args.opts, args, purpose="infer" if args.eval_only else "train")


def build_eval_model(cfg, resume):
    """The model ``--eval-only`` evaluates, prepared as tools/infer.py prepares it
    (:func:`sniper_d2.inference.fast_model.build_inference_model`): ``MODEL.WEIGHTS``, or with
    ``--resume`` the last checkpoint in ``OUTPUT_DIR`` when there is one. detectron2's own evaluation
    (SNIPER disabled) runs the backbone in float32."""
    checkpointer = DetectionCheckpointer(None, save_dir=cfg.OUTPUT_DIR)
    weights = checkpointer.get_checkpoint_file() if resume and checkpointer.has_checkpoint() else None
    return build_inference_model(cfg, weights, precision=None if cfg.SNIPER.ENABLED else "fp32")


def main(args):
    cfg = setup(args)
    if args.eval_only:
        res = Trainer.test(cfg, build_eval_model(cfg, args.resume))
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
