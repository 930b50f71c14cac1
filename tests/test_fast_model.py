"""prepare_for_inference: batch norms folded into convolutions, channels-last weights; same outputs."""

import torch
from detectron2.layers import Conv2d, FrozenBatchNorm2d
from detectron2.modeling import build_model

import sniper_d2.modeling  # noqa: F401
from sniper_d2.cli import setup_cfg
from sniper_d2.inference.fast_model import fold_batch_norms, prepare_for_inference


def _random_stats(model, seed, spread=1.0):
    """Batch-norm statistics and affine parameters away from the identity (as a trained model has)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm2d, FrozenBatchNorm2d)):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.5 * spread)
            m.running_var.copy_(1 + (torch.rand(n, generator=g) * 2 - 0.9) * spread)
            m.weight.data.copy_(1 + (torch.rand(n, generator=g) - 0.5) * spread)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.2 * spread)


def test_folding_a_conv_and_its_batch_norm_gives_the_same_output():
    for norm, bias in ((torch.nn.BatchNorm2d(5), False), (FrozenBatchNorm2d(5), True)):
        conv = Conv2d(3, 5, 3, padding=1, bias=bias, norm=norm, activation=torch.relu).eval()
        _random_stats(conv, 0)
        x = torch.randn(2, 3, 9, 11)
        expected = conv(x)
        assert fold_batch_norms(conv) == 1 and conv.norm is None
        torch.testing.assert_close(conv(x), expected, rtol=1e-5, atol=1e-5)


def test_a_prepared_detector_finds_the_same_boxes():
    cfg = setup_cfg("configs/sniper_tiny_cpu.yaml", ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
                                                     "MODEL.RPN.POST_NMS_TOPK_TEST", "50"], purpose="read")
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    _random_stats(model, 1, spread=0.3)  # deep enough to leave detections
    images = [{"image": torch.randint(0, 256, (3, 96, 128), dtype=torch.uint8), "height": 96, "width": 128}
              for _ in range(2)]
    with torch.no_grad():
        expected = model(images)
        n_norms = sum(isinstance(m, Conv2d) and m.norm is not None for m in model.modules())
        prepare_for_inference(model)
        got = model(images)
    assert n_norms > 0 and not any(isinstance(m, Conv2d) and m.norm is not None for m in model.modules())
    assert model.backbone.bottom_up.stem.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    for e, g in zip(expected, got):
        e, g = e["instances"], g["instances"]
        assert len(e) == len(g) > 0
        torch.testing.assert_close(g.pred_boxes.tensor, e.pred_boxes.tensor, rtol=1e-3, atol=1e-2)
        torch.testing.assert_close(g.scores, e.scores, rtol=1e-3, atol=1e-4)
        assert torch.equal(g.pred_classes, e.pred_classes)
