"""Evaluation across 2 CPU processes (gloo) gives the same COCO numbers as 1 process."""

import json
import os

import numpy as np
import pytest
import torch
from detectron2.structures import Boxes, Instances

from conftest import free_dist_url
from test_stitching_oracle import PARAMS, make_dataset, visible_rectangles


class NoisyOracle(torch.nn.Module):
    """Visible rectangles, jittered, with scores from their coordinates: AP well below 1, but
    a pure function of each tile, so any split of the images over processes gives the same result."""

    def forward(self, inputs):
        outputs = []
        for item in inputs:
            tile = item["image"].permute(1, 2, 0).numpy()
            boxes, classes = visible_rectangles(tile)
            jitter = ((boxes[:, :1] * 7 + boxes[:, 1:2] * 13) % 9 - 4).astype(np.float32)
            boxes = boxes + jitter
            scores = ((boxes[:, 0] * 31 + boxes[:, 1] * 17) % 97 + 3) / 100.0
            inst = Instances(tile.shape[:2])
            inst.pred_boxes = Boxes(torch.as_tensor(boxes))
            inst.scores = torch.as_tensor(scores, dtype=torch.float32)
            inst.pred_classes = torch.as_tensor((classes + (jitter[:, 0] > 3)) % 3)
            outputs.append({"instances": inst})
        return outputs


def evaluate_on_all_processes(json_path, out_file):
    """Run in each process: its share of the images, tiled inference, COCOEvaluator (gathers to rank 0)."""
    from detectron2.evaluation import COCOEvaluator
    from detectron2.utils import comm

    from sniper_d2.data.datasets import register_coco_json
    from sniper_d2.inference import MultiScaleTiledPredictor
    from sniper_d2.inference.evaluation import tiled_inference_on_dataset

    register_coco_json("dist_eval", json_path)
    evaluator = COCOEvaluator("dist_eval", tasks=("bbox",), use_fast_impl=False, max_dets_per_image=100)
    res = tiled_inference_on_dataset(MultiScaleTiledPredictor(NoisyOracle(), PARAMS), "dist_eval", evaluator)
    if comm.is_main_process():
        with open(out_file, "w") as f:
            json.dump({"res": res["bbox"], "world": comm.get_world_size()}, f)


def test_two_processes_equal_one_process(tmp_path):
    from sniper_d2.engine import launch_cpu

    data = make_dataset(str(tmp_path / "data"), n=4, seed=3)
    one, two = str(tmp_path / "one.json"), str(tmp_path / "two.json")
    evaluate_on_all_processes(data, one)
    launch_cpu(evaluate_on_all_processes, 2, dist_url=free_dist_url(), args=(data, two))
    r1, r2 = json.load(open(one)), json.load(open(two))
    assert r1["world"] == 1 and r2["world"] == 2
    assert 5.0 < r1["res"]["AP"] < 95.0, "the stand-in should make mistakes, or equality proves little"
    for key, value in r1["res"].items():
        assert r2["res"][key] == pytest.approx(value, abs=1e-9), key
