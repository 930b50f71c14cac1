"""Oracle tests of tiled multi-scale inference + stitching + COCO evaluation.

A stand-in model "detects" exactly what is visible in each tile it gets: the bounding boxes of the
coloured rectangles drawn on a black background (class = colour). Fed through tiling, scale ranges,
the inner-border rule, the merge and COCOEvaluator, this must give AP = 1.0; without the border
rule, objects cut by tile borders give extra boxes and AP drops.
"""

import json
import os

import cv2
import numpy as np
import pytest
import torch
from detectron2.evaluation import COCOEvaluator
from detectron2.structures import Boxes, Instances

from sniper_d2.data.datasets import register_coco_json
from sniper_d2.inference import MultiScaleTiledPredictor, TiledInferenceParams
from sniper_d2.inference.evaluation import tiled_inference_on_dataset

COLORS = [(0, 0, 200), (0, 200, 0), (200, 0, 0)]  # BGR, one per class
PARAMS = TiledInferenceParams(scales=(2.0, 1.0, 0.5), valid_ranges=((0, 40), (30, 120), (100, -1)),
                              tile_size=256, tile_overlap=128, tile_batch_size=3, score_thresh=0.0,
                              max_detections=100)


def make_dataset(folder, n=3, seed=0):
    """Black images with non-overlapping rectangles (multiples of 4 px) of 16-200 px."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    images, annotations = [], []
    for i in range(n):
        h, w = 600, 900
        img = np.zeros((h, w, 3), np.uint8)
        taken = np.zeros((h, w), bool)
        for size in (16, 20, 24, 36, 48, 64, 96, 112, 140, 200, 28, 44):
            for _ in range(50):
                x0 = int(rng.integers(1, (w - size - 4) // 4)) * 4
                y0 = int(rng.integers(1, (h - size - 4) // 4)) * 4
                if not taken[max(0, y0 - 8):y0 + size + 8, max(0, x0 - 8):x0 + size + 8].any():
                    break
            else:
                continue
            taken[y0:y0 + size, x0:x0 + size] = True
            cls = int(rng.integers(0, 3))
            img[y0:y0 + size, x0:x0 + size] = COLORS[cls]
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": cls + 1,
                                "bbox": [x0, y0, size, size], "area": size * size, "iscrowd": 0})
        cv2.imwrite(os.path.join(folder, f"{i}.png"), img)
        images.append({"id": i + 1, "file_name": f"{i}.png", "height": h, "width": w})
    categories = [{"id": k + 1, "name": f"c{k}"} for k in range(3)]
    path = os.path.join(folder, "gt.json")
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    return path


def visible_rectangles(tile):
    """(boxes (K, 4) XYXY tile pixels, classes (K,)) of the coloured blobs in a BGR tile."""
    mask = (tile.max(axis=2) >= 100).astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=4)
    boxes, classes = [], []
    for k in range(1, n):
        x, y, w, h, _ = stats[k]
        patch = tile[y:y + h, x:x + w].reshape(-1, 3)
        cls = int(np.argmax(patch.max(axis=0)))
        boxes.append([x, y, x + w, y + h])
        classes.append({0: 2, 1: 1, 2: 0}[cls])  # channel holding the colour -> class
    return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(classes, np.int64)


class OracleModel(torch.nn.Module):
    """Stand-in detector: returns exactly the rectangles visible in each input tile (score 1)."""

    def forward(self, inputs):
        outputs = []
        for item in inputs:
            tile = item["image"].permute(1, 2, 0).numpy()
            boxes, classes = visible_rectangles(tile)
            inst = Instances(tile.shape[:2])
            inst.pred_boxes = Boxes(torch.as_tensor(boxes))
            inst.scores = torch.ones(len(boxes))
            inst.pred_classes = torch.as_tensor(classes)
            outputs.append({"instances": inst})
        return outputs


def evaluate(json_path, name, params, out_dir):
    register_coco_json(name, json_path)
    evaluator = COCOEvaluator(name, tasks=("bbox",), output_dir=str(out_dir), use_fast_impl=False,
                              max_dets_per_image=params.max_detections)
    return tiled_inference_on_dataset(MultiScaleTiledPredictor(OracleModel(), params), name, evaluator)["bbox"]


@pytest.fixture(scope="module")
def oracle_data(tmp_path_factory):
    return make_dataset(str(tmp_path_factory.mktemp("oracle")))


def test_ground_truth_through_tiling_and_stitching_gives_ap_1(oracle_data, tmp_path):
    res = evaluate(oracle_data, "oracle_ok", PARAMS, tmp_path)
    assert res["AP"] == pytest.approx(100.0), res
    assert res["APs"] == pytest.approx(100.0) and res["APl"] == pytest.approx(100.0)


def test_the_data_really_cuts_objects_at_tile_borders(oracle_data):
    """Guard for the test above: some objects must cross inner tile borders at some scale."""
    from sniper_d2.geometry import tile_windows

    gt = json.load(open(oracle_data))
    boxes = np.array([a["bbox"] for a in gt["annotations"] if a["image_id"] == 1], np.float64)
    boxes[:, 2:] += boxes[:, :2]
    cut = 0
    for scale in PARAMS.scales:
        for win in tile_windows((int(600 * scale), int(900 * scale)), PARAMS.tile_size, PARAMS.tile_overlap):
            b = boxes * scale
            inside_x = (b[:, 0] < win[2]) & (b[:, 2] > win[0])
            inside_y = (b[:, 1] < win[3]) & (b[:, 3] > win[1])
            partly = inside_x & inside_y & ~((b[:, 0] >= win[0]) & (b[:, 2] <= win[2]) & (b[:, 1] >= win[1]) & (b[:, 3] <= win[3]))
            cut += int(partly.sum())
    assert cut >= 10


def test_without_the_border_rule_cut_objects_become_false_positives(oracle_data, tmp_path):
    from dataclasses import replace

    res = evaluate(oracle_data, "oracle_noborder", replace(PARAMS, use_border_rule=False), tmp_path)
    assert res["AP"] < 90.0, res
