"""Negative chips: where they land, the proposal dump's file (resume, hash check), and training."""

import os

import numpy as np
import pytest

from conftest import ROOT
from sniper_d2.chips import boxes_inside
from sniper_d2.coco import images_hash, load_coco_records
from sniper_d2.io import ArtifactError
from sniper_d2.plans import PlanParams, build_plan
from sniper_d2.proposals import (finished_image_ids, load_proposals_for_records, merge_proposal_parts,
                                 save_proposal_part, scales_hash)

PARAMS = PlanParams(scales=(2.0, 1.0, -1.0), valid_ranges=((0, 40), (24, 160), (128, -1)), chip_size=256,
                    stride=32, neg_min_proposals=(4, 4, 4))


def weak_detector_proposals(records, copies=6, seed=0):
    """What a weak detector fires on: every object and every distractor, several jittered times."""
    rng = np.random.default_rng(seed)
    out = {}
    for rec in records:
        boxes = np.concatenate([rec["boxes"], rec["distractors"]])
        jitter = rng.normal(0, 1.5, (copies, len(boxes), 4))
        props = (boxes[None] + jitter).reshape(-1, 4).astype(np.float32)
        out[rec["image_id"]] = [props] * len(PARAMS.scales)
    return out


def test_negative_chips_land_on_distractors_and_not_inside_positive_chips(small_synthetic):
    records, _ = load_coco_records(small_synthetic["train"])
    plan = build_plan(records, PARAMS, epochs=2, seed=0, proposals=weak_detector_proposals(records), progress=False)
    neg = np.flatnonzero(plan.is_negative)
    assert len(neg) > 0
    on_distractor = 0
    for i in neg:
        rec = records[plan.image_index[i]]
        chip = plan.chips[i:i + 1]
        has_distractor = bool(boxes_inside(rec["distractors"], chip).any())
        on_distractor += has_distractor
        # Otherwise the proposals it holds came from an object that is not valid at this scale
        # (so no positive chip of this scale had to contain it).
        lo, hi = PARAMS.valid_ranges[plan.scale_index[i]]
        sizes = np.sqrt(np.prod(rec["boxes"][:, 2:] - rec["boxes"][:, :2], axis=1))
        invalid_here = (sizes < lo) | ((sizes >= hi) if hi >= 0 else False)
        overlaps = boxes_inside(rec["boxes"], chip)[:, 0] | _intersects(rec["boxes"], chip[0])
        assert has_distractor or (overlaps & invalid_here).any()
        same = (plan.image_index == plan.image_index[i]) & (plan.epoch == plan.epoch[i]) & \
               (plan.scale_index == plan.scale_index[i]) & ~plan.is_negative
        assert not boxes_inside(chip, plan.chips[same]).any(), "a negative chip lies inside a positive chip"
    assert on_distractor / len(neg) >= 0.6, "most negative chips must cover distractors"
    # Images without objects get negative chips only.
    empty = [k for k, r in enumerate(records) if len(r["boxes"]) == 0]
    assert empty, "the fixture must hold an object-free image"
    for k in empty:
        assert plan.is_negative[plan.image_index == k].all() and (plan.image_index == k).any()


def _intersects(boxes, chip):
    return (boxes[:, 0] < chip[2]) & (boxes[:, 2] > chip[0]) & (boxes[:, 1] < chip[3]) & (boxes[:, 3] > chip[1])


def _header(records, scales=PARAMS.scales):
    return {"images_hash": images_hash(records), "scales_hash": scales_hash(scales)}


def test_proposal_file_resumes_and_refuses_other_data(small_synthetic, tmp_path):
    records, _ = load_coco_records(small_synthetic["train"])
    path = str(tmp_path / "props.npz")
    header = _header(records)
    first = records[0]["image_id"]
    boxes = np.array([[1, 1, 20, 20], [5, 5, 30, 40]], np.float32)
    save_proposal_part(path, "rank0_a", header, [first], [first, first], [0, 2], boxes, [0.5, 0.9])
    assert finished_image_ids(path, header) == {first}
    rest = [r["image_id"] for r in records[1:]]
    save_proposal_part(path, "rank0_b", header, rest, [], [], np.zeros((0, 4)), [])
    merge_proposal_parts(path, header)
    assert not os.path.exists(path + ".parts")
    grouped = load_proposals_for_records(path, records, PARAMS.scales)
    np.testing.assert_array_equal(grouped[first][0], boxes[:1])
    np.testing.assert_array_equal(grouped[first][2], boxes[1:])
    assert len(grouped[first][1]) == 0
    with pytest.raises(ArtifactError, match="another data set"):
        load_proposals_for_records(path, records[:-1], PARAMS.scales)
    with pytest.raises(ArtifactError, match="other SNIPER.SCALES"):
        load_proposals_for_records(path, records, (3.0, 1.0, -1.0))


def test_parts_of_another_dump_are_refused(small_synthetic, tmp_path):
    records, _ = load_coco_records(small_synthetic["train"])
    path = str(tmp_path / "props.npz")
    save_proposal_part(path, "old", _header(records[:2]), [1], [], [], np.zeros((0, 4)), [])
    with pytest.raises(ArtifactError, match="another data set or scales"):
        finished_image_ids(path, _header(records))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_dump_tool_with_a_random_model_writes_a_usable_file(small_synthetic, tmp_path, precision):
    """Also with the backbone converted to bf16 (tools/dump_proposals.py prepares the model)."""
    import torch
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    import sniper_d2.modeling  # noqa: F401
    from sniper_d2.config import add_sniper_config
    from sniper_d2.inference.proposal_dump import dump_proposals

    cfg = get_cfg()
    add_sniper_config(cfg)
    cfg.merge_from_file(os.path.join(ROOT, "configs/sniper_tiny_cpu.yaml"))
    cfg.merge_from_list(["SNIPER.NEG.TOPK_PER_SCALE", "20", "SNIPER.TEST.TILE_SIZE", "256",
                         "SNIPER.SCALES", "(1.0, -1.0)", "SNIPER.VALID_RANGES", "((0, 80), (60, -1))",
                         "SNIPER.TEST.PRECISION", precision])
    torch.manual_seed(0)
    model = build_model(cfg)
    if precision != "fp32":
        from sniper_d2.inference.fast_model import prepare_for_inference

        prepare_for_inference(model, precision=precision)
        assert next(model.backbone.parameters()).dtype == torch.bfloat16
    records, _ = load_coco_records(small_synthetic["train"])
    records = records[:3]
    path = str(tmp_path / "p.npz")
    # An earlier run finished the first image: it is not redone (its part stays as it was).
    header = _header(records, cfg.SNIPER.SCALES)
    save_proposal_part(path, "earlier", header, [records[0]["image_id"]], [], [], np.zeros((0, 4)), [])
    dump_proposals(cfg, model, records, path, save_every=1)
    grouped = load_proposals_for_records(path, records, cfg.SNIPER.SCALES)
    assert all(len(grouped[records[0]["image_id"]][s]) == 0 for s in range(2))
    for rec in records[1:]:
        for s in range(2):
            props = grouped[rec["image_id"]][s]
            assert 0 < len(props) <= 20
            assert (props[:, 0] >= 0).all() and (props[:, 2] <= rec["width"]).all()
            assert (props[:, 1] >= 0).all() and (props[:, 3] <= rec["height"]).all()


class _WholeTileRPN:
    """Stands in for GeneralizedRCNN in the proposal dump: one proposal per tile, the whole tile
    (objectness 1); records the size of every batch it is given."""

    def __init__(self):
        self.batch_sizes = []

    def preprocess_image(self, inputs):
        import types

        self.batch_sizes.append(len(inputs))
        return types.SimpleNamespace(tensor=None, inputs=inputs)

    def backbone(self, tensor):
        return None

    def proposal_generator(self, images, features, gt):
        import types

        import torch

        out = []
        for item in images.inputs:
            h, w = item["image"].shape[1:]
            out.append(types.SimpleNamespace(proposal_boxes=types.SimpleNamespace(
                tensor=torch.tensor([[0.0, 0.0, w, h]])), objectness_logits=torch.ones(1)))
        return out, {}


def test_proposal_dump_streams_tiles_in_batches_and_keeps_a_vanishing_scale_empty():
    from sniper_d2.geometry import tile_windows
    from sniper_d2.inference.proposal_dump import image_proposals

    image = np.zeros((300, 400, 3), np.uint8)
    model = _WholeTileRPN()
    per_scale = image_proposals(model, image, scales=(1.0, 1e-4), chip_size=256, tile_size=256, tile_overlap=64,
                                batch_size=3, topk=100, nms_thresh=0.99)
    assert model.batch_sizes == [3, 1]  # 4 tiles at scale 1, none at 1e-4, 3 per forward pass
    boxes, scores = per_scale[0]
    expected = tile_windows((300, 400), 256, 64).astype(np.float32)
    np.testing.assert_allclose(boxes[np.lexsort(boxes.T[::-1])], expected[np.lexsort(expected.T[::-1])])
    assert per_scale[1][0].shape == (0, 4) and per_scale[1][1].shape == (0,)
