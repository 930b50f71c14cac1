"""sniper_d2.inference.evaluation: SniperCOCOEvaluator and the one evaluation path,
tiled_inference_on_dataset / run_sniper_inference_on_dataset (ground truth in, AP 1.0 out).

The oracle AP tests with objects cut by tile borders and the 2-process test are in
test_stitching_oracle.py and test_eval_distributed.py; these tests cover the public API around them.
"""

import json
import os

import cv2
import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.evaluation import COCOEvaluator, DatasetEvaluator
from detectron2.structures import Boxes, Instances

from sniper_d2.config import add_sniper_config
from sniper_d2.data.datasets import register_coco_json
from sniper_d2.inference.evaluation import (SniperCOCOEvaluator, build_sniper_evaluator,
                                            run_sniper_inference_on_dataset)
from sniper_d2.image_io import ImageReadError
from test_stitching_oracle import OracleModel, make_dataset


def sniper_cfg(**test_keys):
    cfg = get_cfg()
    add_sniper_config(cfg)
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SNIPER.CHIP_SIZE = 256
    cfg.SNIPER.TEST.SCALES = (2.0, 1.0, -1.0)
    cfg.SNIPER.TEST.VALID_RANGES = ((0.0, 40.0), (30.0, 120.0), (100.0, -1.0))
    cfg.SNIPER.TEST.TILE_SIZE = 256
    cfg.SNIPER.TEST.TILE_OVERLAP = 128
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    for key, value in test_keys.items():
        setattr(cfg.SNIPER.TEST, key, value)
    return cfg


@pytest.fixture(scope="module")
def oracle_dataset(tmp_path_factory):
    path = make_dataset(str(tmp_path_factory.mktemp("eval")), n=2, seed=7)
    register_coco_json("eval_oracle", path)
    return path


def dense_dataset(folder, name, n_objects=150):
    """One 400x600 image with ``n_objects`` 12 px squares of class 1 on a grid."""
    os.makedirs(folder, exist_ok=True)
    image = np.zeros((400, 600, 3), np.uint8)
    annotations = []
    for k in range(n_objects):
        x, y = 8 + (k % 15) * 38, 8 + (k // 15) * 38
        image[y:y + 12, x:x + 12] = (0, 0, 200)
        annotations.append({"id": k + 1, "image_id": 1, "category_id": 1, "bbox": [x, y, 12, 12], "area": 144,
                            "iscrowd": 0})
    cv2.imwrite(os.path.join(folder, "dense.png"), image)
    path = os.path.join(folder, "dense.json")
    with open(path, "w") as f:
        json.dump({"images": [{"id": 1, "file_name": "dense.png", "height": 400, "width": 600}],
                   "annotations": annotations, "categories": [{"id": 1, "name": "c0"}]}, f)
    register_coco_json(name, path)
    return annotations


def test_ground_truth_through_run_sniper_inference_on_dataset_gives_ap_1(oracle_dataset, tmp_path):
    model = OracleModel().train()
    res = run_sniper_inference_on_dataset(sniper_cfg(), model, "eval_oracle", str(tmp_path))
    assert res["bbox"]["AP"] == pytest.approx(100.0), res
    assert model.training, "training mode is restored after evaluation (periodic evaluation)"
    assert os.path.isfile(tmp_path / "coco_instances_results.json")


def test_soft_nms_merge_also_gives_ap_1(oracle_dataset, tmp_path):
    res = run_sniper_inference_on_dataset(sniper_cfg(MERGE_METHOD="soft_nms"), OracleModel(), "eval_oracle")
    assert res["bbox"]["AP"] == pytest.approx(100.0), res


class RecordingEvaluator(DatasetEvaluator):
    """A caller's evaluator: keeps what it is given."""

    def reset(self):
        self.seen = []

    def process(self, inputs, outputs):
        self.seen += [(i["image_id"], o["instances"].image_size, len(o["instances"])) for i, o in zip(inputs, outputs)]

    def evaluate(self):
        return {"seen": self.seen}


def test_a_callers_evaluator_gets_each_full_image_at_its_original_size(oracle_dataset):
    cfg = sniper_cfg()
    cfg.INPUT.MIN_SIZE_TEST = 800  # a stock test mapper would resize 600x900 to 800x1200
    seen = run_sniper_inference_on_dataset(cfg, OracleModel(), "eval_oracle", evaluator=RecordingEvaluator())["seen"]
    assert sorted(i for i, _, _ in seen) == [1, 2]
    assert all(size == (600, 900) and n > 0 for _, size, n in seen)


def test_the_evaluator_keeps_max_detections_per_image_not_100(tmp_path):
    annotations = dense_dataset(str(tmp_path), "eval_dense")
    boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + 12, a["bbox"][1] + 12] for a in annotations],
                         dtype=torch.float32)
    inst = Instances((400, 600))
    inst.pred_boxes = Boxes(boxes)
    inst.scores = torch.linspace(1.0, 0.5, len(boxes))
    inst.pred_classes = torch.zeros(len(boxes), dtype=torch.long)
    inputs, outputs = [{"image_id": 1, "height": 400, "width": 600}], [{"instances": inst}]

    def ap(evaluator):
        evaluator.reset()
        evaluator.process(inputs, outputs)
        return evaluator.evaluate()["bbox"]["AP"]

    cfg = sniper_cfg()
    cfg.TEST.DETECTIONS_PER_IMAGE = 500
    assert ap(build_sniper_evaluator(cfg, "eval_dense")) == pytest.approx(100.0)
    assert ap(COCOEvaluator("eval_dense", tasks=("bbox",), use_fast_impl=False)) < 70.0  # stock: 100 per image


def test_the_evaluator_scores_a_huge_image_by_windows_as_plain_coco_when_no_object_is_cut(tmp_path):
    annotations = dense_dataset(str(tmp_path), "eval_windows")  # 12 px squares every 38 px from 8 px
    rng = np.random.default_rng(0)
    xy = torch.tensor([a["bbox"][:2] for a in annotations], dtype=torch.float32)
    boxes = torch.cat([xy, xy + 12], 1) + torch.as_tensor(rng.uniform(-2, 2, (len(xy), 4)), dtype=torch.float32)
    inst = Instances((400, 600))
    inst.pred_boxes = Boxes(boxes[::2].clone())  # half of the objects found, plus 20 false positives
    inst.pred_boxes.tensor = torch.cat([inst.pred_boxes.tensor, boxes[1::2][:20] + 19])
    inst.scores = torch.as_tensor(rng.uniform(0.1, 1.0, len(inst.pred_boxes)), dtype=torch.float32)
    inst.pred_classes = torch.zeros(len(inst.pred_boxes), dtype=torch.long)

    def evaluate(**windows):
        evaluator = SniperCOCOEvaluator("eval_windows", distributed=False, **windows)
        evaluator.reset()
        evaluator.process([{"image_id": 1, "height": 400, "width": 600}], [{"instances": inst}])
        return evaluator.evaluate()["bbox"]

    plain = evaluate()
    # 190 px windows (a 3 x 4 grid): no object (every 38 px from 8 px, 12 px wide) is cut by a border
    windowed = evaluate(window_size_px=190, windows_min_pixels=0, windows_min_objects=100)
    assert 20 < plain["AP50"] < 80 and plain["AP"] > 5
    assert windowed == pytest.approx(plain, abs=1e-9, nan_ok=True)  # APm, APl: nan (no such objects)
    assert evaluate(window_size_px=190, windows_min_pixels=0, windows_min_objects=151) == pytest.approx(plain, nan_ok=True)
    cut = evaluate(window_size_px=16, windows_min_pixels=0, windows_min_objects=100)  # borders cut most objects
    assert cut["AP50"] < plain["AP50"] - 5


def test_the_evaluator_refuses_detections_in_another_frame(oracle_dataset):
    evaluator = SniperCOCOEvaluator("eval_oracle")
    inst = Instances((256, 256))  # tile pixels, not the 600x900 original
    inst.pred_boxes = Boxes(torch.zeros((0, 4)))
    inst.scores = torch.zeros(0)
    inst.pred_classes = torch.zeros(0, dtype=torch.long)
    with pytest.raises(ValueError, match=r"\(256, 256\) image.*\(600, 900\)"):
        evaluator.process([{"image_id": 1, "height": 600, "width": 900, "file_name": "0.png"}], [{"instances": inst}])


def test_an_image_whose_size_differs_from_the_data_set_is_refused_naming_it(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((50, 70, 3), np.uint8))
    path = tmp_path / "a.json"
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png", "height": 50, "width": 80}],
                                "annotations": [], "categories": [{"id": 1, "name": "c0"}]}))
    register_coco_json("eval_wrong_size", str(path))
    with pytest.raises(ImageReadError, match=r"a\.png: image is 70x50 .* says 80x50"):
        run_sniper_inference_on_dataset(sniper_cfg(), OracleModel(), "eval_wrong_size", evaluator=RecordingEvaluator())


def test_a_data_parallel_model_is_run_unwrapped_and_left_in_its_mode(oracle_dataset):
    inner = OracleModel().train()
    res = run_sniper_inference_on_dataset(sniper_cfg(), torch.nn.DataParallel(inner), "eval_oracle")
    assert res["bbox"]["AP"] == pytest.approx(100.0) and inner.training
