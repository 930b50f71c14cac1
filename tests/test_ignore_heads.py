"""Ignore-aware label assignment: anchors and proposals on invalid ground truth are ignored."""

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling.proposal_generator import build_proposal_generator
from detectron2.modeling.roi_heads import build_roi_heads
from detectron2.structures import Boxes, Instances, pairwise_iou
from detectron2.utils.events import EventStorage
from hypothesis import given, settings
from hypothesis import strategies as st

import sniper_d2.modeling  # noqa: F401  (registers the heads)
from sniper_d2.config import add_sniper_config

ROOT_CFG = "configs/sniper_tiny_cpu.yaml"


@pytest.fixture(scope="module")
def cfg():
    c = get_cfg()
    add_sniper_config(c)
    c.merge_from_file(ROOT_CFG)
    c.MODEL.RPN.BATCH_SIZE_PER_IMAGE = 100000  # no subsampling: every label is visible
    c.MODEL.RPN.POSITIVE_FRACTION = 1.0
    c.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 100000
    c.MODEL.ROI_HEADS.POSITIVE_FRACTION = 1.0
    return c


def _gt(boxes, valid, classes=None):
    inst = Instances((256, 256))
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    inst.gt_classes = torch.tensor(classes or [0] * len(boxes), dtype=torch.int64)
    if valid is not None:
        inst.gt_valid = torch.tensor(valid, dtype=torch.bool)
    return inst


ANCHORS = Boxes(torch.tensor([
    [10, 10, 50, 50],      # 0: exactly the valid box
    [100, 100, 140, 140],  # 1: exactly the invalid box
    [115, 115, 155, 155],  # 2: overlaps the invalid box a little (IoU ~0.24)
    [200, 200, 240, 240],  # 3: far from both: background
    [12, 12, 52, 52],      # 4: overlaps the valid box (IoU ~0.82)
], dtype=torch.float32))


def _rpn(cfg):
    shapes = {f: ShapeSpec(channels=64, stride=s) for f, s in zip(["p2", "p3", "p4", "p5", "p6"], [4, 8, 16, 32, 64])}
    return build_proposal_generator(cfg, shapes)


def test_rpn_anchor_on_invalid_box_is_ignored_and_valid_box_is_positive(cfg):
    rpn = _rpn(cfg)
    gt = _gt([[10, 10, 50, 50], [100, 100, 140, 140]], [True, False])
    labels, matched = rpn.label_and_sample_anchors([ANCHORS], [gt])
    # Stock RPN would make anchor 1 a positive of the invalid box.
    assert labels[0].tolist() == [1, -1, 0, 0, 1]
    assert torch.equal(matched[0][0], torch.tensor([10.0, 10, 50, 50]))


def test_rpn_ignore_threshold_is_configurable(cfg):
    c = cfg.clone()
    c.SNIPER.RPN_IGNORE_IOU = 0.2
    labels, _ = _rpn(c).label_and_sample_anchors([ANCHORS], [_gt([[10, 10, 50, 50], [100, 100, 140, 140]], [True, False])])
    assert labels[0].tolist() == [1, -1, -1, 0, 1]


def test_rpn_without_valid_flags_equals_stock_rpn(cfg):
    c = cfg.clone()
    gt = _gt([[10, 10, 50, 50], [100, 100, 140, 140]], None)
    ours, _ = _rpn(c).label_and_sample_anchors([ANCHORS], [gt])
    c.MODEL.PROPOSAL_GENERATOR.NAME = "RPN"
    stock, _ = _rpn(c).label_and_sample_anchors([ANCHORS], [gt])
    assert ours[0].tolist() == stock[0].tolist() == [1, 1, 0, 0, 1]


def test_rpn_all_invalid_chip_has_no_positives(cfg):
    labels, _ = _rpn(cfg).label_and_sample_anchors([ANCHORS], [_gt([[10, 10, 50, 50]], [False])])
    assert labels[0].tolist() == [-1, 0, 0, 0, -1]


def test_rpn_ignored_anchors_never_take_a_place_in_the_sample(cfg):
    c = cfg.clone()
    c.MODEL.RPN.BATCH_SIZE_PER_IMAGE = 2
    c.MODEL.RPN.POSITIVE_FRACTION = 0.5
    rpn = _rpn(c)
    gt = _gt([[10, 10, 50, 50], [100, 100, 140, 140]], [True, False])
    for seed in range(10):
        torch.manual_seed(seed)
        labels = rpn.label_and_sample_anchors([ANCHORS], [gt])[0][0].tolist()
        assert labels[1] == -1  # on the invalid box
        assert labels.count(1) == 1 and labels.count(0) == 1  # the sample is full: one negative of 2 and 3
        assert labels.index(0) in (2, 3)


def _roi_heads(cfg):
    shapes = {f: ShapeSpec(channels=64, stride=s) for f, s in zip(["p2", "p3", "p4", "p5"], [4, 8, 16, 32])}
    return build_roi_heads(cfg, shapes)


def _proposals(boxes):
    p = Instances((256, 256))
    p.proposal_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    p.objectness_logits = torch.zeros(len(boxes))
    return p


def test_roi_proposals_on_invalid_boxes_are_left_out_of_sampling(cfg):
    heads = _roi_heads(cfg)
    gt = _gt([[10, 10, 50, 50], [100, 100, 140, 140]], [True, False], classes=[2, 1])
    props = _proposals([[12, 12, 52, 52], [102, 102, 142, 142], [200, 200, 240, 240]])
    with EventStorage():
        out = heads.label_and_sample_proposals([props], [gt])[0]
    kept = out.proposal_boxes.tensor.tolist()
    assert [102, 102, 142, 142] not in kept and [100, 100, 140, 140] not in kept
    by_box = {tuple(b): int(c) for b, c in zip(kept, out.gt_classes)}
    assert by_box[(12.0, 12.0, 52.0, 52.0)] == 2          # foreground of the valid box
    assert by_box[(10.0, 10.0, 50.0, 50.0)] == 2          # the valid gt box added as a proposal
    assert by_box[(200.0, 200.0, 240.0, 240.0)] == 3      # background (num_classes)
    assert len(kept) == 3


def test_roi_without_valid_flags_equals_stock_heads(cfg):
    c = cfg.clone()
    gt = _gt([[10, 10, 50, 50], [100, 100, 140, 140]], None, classes=[2, 1])
    boxes = [[12, 12, 52, 52], [102, 102, 142, 142], [200, 200, 240, 240]]
    torch.manual_seed(0)
    with EventStorage():
        ours = _roi_heads(c).label_and_sample_proposals([_proposals(boxes)], [gt])[0]
        c.MODEL.ROI_HEADS.NAME = "StandardROIHeads"
        torch.manual_seed(0)
        stock = _roi_heads(c).label_and_sample_proposals([_proposals(boxes)], [gt])[0]
    assert sorted(map(tuple, ours.proposal_boxes.tensor.tolist())) == sorted(map(tuple, stock.proposal_boxes.tensor.tolist()))
    assert sorted(ours.gt_classes.tolist()) == sorted(stock.gt_classes.tolist())


def test_rpn_positive_of_a_valid_box_stays_positive_next_to_an_invalid_box(cfg):
    # The valid box and the invalid one overlap; anchor 0 matches the valid box (IoU 1) and has
    # IoU ~0.39 with the invalid box: still a positive. Anchor 1 is the invalid box itself: ignored.
    gt = _gt([[10, 10, 50, 50], [20, 20, 60, 60]], [True, False])
    anchors = Boxes(torch.tensor([[10, 10, 50, 50], [20, 20, 60, 60], [200, 200, 240, 240]], dtype=torch.float32))
    labels, _ = _rpn(cfg).label_and_sample_anchors([anchors], [gt])
    assert labels[0].tolist() == [1, -1, 0]


def test_rpn_chip_without_any_box_is_all_background(cfg):
    labels, matched = _rpn(cfg).label_and_sample_anchors([ANCHORS], [_gt(torch.zeros(0, 4).tolist(), [])])
    assert labels[0].tolist() == [0] * len(ANCHORS) and matched[0].shape == (len(ANCHORS), 4)


def _random_boxes(rng, n):
    xy = rng.uniform(0, 200, (n, 2))
    wh = rng.uniform(8, 60, (n, 2))
    return torch.tensor(np.concatenate([xy, xy + wh], axis=1), dtype=torch.float32)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6), n_valid=st.integers(0, 4), n_invalid=st.integers(0, 4))
def test_rpn_labels_are_stock_labels_of_valid_boxes_with_ignores_on_invalid_boxes(cfg, seed, n_valid, n_invalid):
    """Oracle: stock RPN run on the valid boxes only, then -1 wherever an anchor that is not a
    positive overlaps an invalid box with IoU > RPN_IGNORE_IOU."""
    rng = np.random.default_rng(seed)
    anchors = Boxes(_random_boxes(rng, 300))
    valid_boxes, invalid_boxes = _random_boxes(rng, n_valid), _random_boxes(rng, n_invalid)
    gt = _gt(torch.cat([valid_boxes, invalid_boxes]).tolist(), [True] * n_valid + [False] * n_invalid)
    ours, _ = _rpn(cfg).label_and_sample_anchors([anchors], [gt])
    stock_cfg = cfg.clone()
    stock_cfg.MODEL.PROPOSAL_GENERATOR.NAME = "RPN"
    expected, _ = _rpn(stock_cfg).label_and_sample_anchors([anchors], [_gt(valid_boxes.tolist(), None)])
    expected = expected[0].clone()
    if n_invalid:
        iou = pairwise_iou(Boxes(invalid_boxes), anchors).max(dim=0).values
        expected[(iou > cfg.SNIPER.RPN_IGNORE_IOU) & (expected != 1)] = -1
    assert torch.equal(ours[0], expected)


def test_roi_proposal_best_matched_to_a_valid_box_is_kept_even_if_it_overlaps_an_invalid_one(cfg):
    heads = _roi_heads(cfg)
    gt = _gt([[10, 10, 50, 50], [14, 14, 54, 54]], [True, False], classes=[2, 1])  # IoU 0.68 between them
    props = _proposals([[11, 11, 51, 51], [14, 14, 54, 54], [100, 100, 140, 140]])
    with EventStorage():
        out = heads.label_and_sample_proposals([props], [gt])[0]
    by_box = {tuple(b): int(c) for b, c in zip(out.proposal_boxes.tensor.tolist(), out.gt_classes)}
    assert by_box == {(11.0, 11.0, 51.0, 51.0): 2, (10.0, 10.0, 50.0, 50.0): 2, (100.0, 100.0, 140.0, 140.0): 3}


def test_roi_proposal_overlapping_an_invalid_box_below_the_threshold_is_background(cfg):
    gt = _gt([[100, 100, 140, 140]], [False], classes=[1])
    props = _proposals([[110, 110, 150, 150], [100, 100, 140, 140]])  # IoU ~0.39 and 1.0 with it
    with EventStorage():
        out = _roi_heads(cfg).label_and_sample_proposals([props], [gt])[0]
    assert out.proposal_boxes.tensor.tolist() == [[110.0, 110.0, 150.0, 150.0]]
    assert out.gt_classes.tolist() == [cfg.MODEL.ROI_HEADS.NUM_CLASSES]
    c = cfg.clone()
    c.SNIPER.ROI_IGNORE_IOU = 0.3
    with EventStorage():
        out = _roi_heads(c).label_and_sample_proposals([_proposals([[110, 110, 150, 150]])], [gt])[0]
    assert len(out) == 0, "the threshold is configurable"


def test_roi_all_valid_flags_equal_stock_heads(cfg):
    c = cfg.clone()
    boxes = [[12, 12, 52, 52], [102, 102, 142, 142], [200, 200, 240, 240]]
    with EventStorage():
        torch.manual_seed(0)
        ours = _roi_heads(c).label_and_sample_proposals(
            [_proposals(boxes)], [_gt([[10, 10, 50, 50], [100, 100, 140, 140]], [True, True], classes=[2, 1])])[0]
        c.MODEL.ROI_HEADS.NAME = "StandardROIHeads"
        torch.manual_seed(0)
        stock = _roi_heads(c).label_and_sample_proposals(
            [_proposals(boxes)], [_gt([[10, 10, 50, 50], [100, 100, 140, 140]], None, classes=[2, 1])])[0]
    assert torch.equal(ours.proposal_boxes.tensor, stock.proposal_boxes.tensor)
    assert torch.equal(ours.gt_classes, stock.gt_classes) and torch.equal(ours.gt_boxes.tensor, stock.gt_boxes.tensor)
