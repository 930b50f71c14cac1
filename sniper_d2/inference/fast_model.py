"""Make a trained detector cheaper to run for inference only, with the same outputs.

:func:`prepare_for_inference` (what ``tools/infer.py`` calls after loading the weights):

- **Batch norms folded into their convolutions.** detectron2's ``Conv2d`` applies its ``norm``
  after the convolution; in eval mode a ``BatchNorm2d`` (or ``FrozenBatchNorm2d``) is the affine
  map ``y = (x - mean) / sqrt(var + eps) * gamma + beta`` per channel, so it is folded exactly into the
  convolution's weight (times ``gamma / sqrt(var + eps)`` per output channel) and bias, and removed:
  one pass over each feature map instead of two (outputs equal up to float rounding).
- **Channels-last memory** on the CPU: oneDNN's convolutions and max pooling work in NHWC; with the
  weights in that layout the backbone stays in it instead of reordering every feature map.
- **16-bit backbone weights** when asked (``precision``, as ``SNIPER.TEST.PRECISION``; "auto"
  resolves on the model's device): converted once instead of autocast converting them on every
  forward pass; the detections are those of autocast (see :mod:`sniper_d2.inference.precision`).

The model is changed in place and is no longer trainable as before (no batch-norm statistics): use it
for inference only. The evaluation during training keeps the training model untouched.
"""

import torch
from torch import nn

from .precision import cast_backbone, model_device_type, resolve_precision

__all__ = ["fold_batch_norms", "prepare_for_inference"]


def _foldable(norm):
    from detectron2.layers import FrozenBatchNorm2d

    return isinstance(norm, FrozenBatchNorm2d) or (
        isinstance(norm, nn.BatchNorm2d) and norm.track_running_stats and norm.running_mean is not None)


@torch.no_grad()
def fold_batch_norms(model):
    """Fold each detectron2 ``Conv2d``'s batch norm into the convolution, in place.

    Returns:
        int: the number of batch norms folded (other norms, e.g. GroupNorm, are left as they are).
    """
    from detectron2.layers import Conv2d

    folded = 0
    for module in model.modules():
        if not (isinstance(module, Conv2d) and _foldable(module.norm)):
            continue
        bn = module.norm
        factor = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (C_out,)
        bias = bn.bias - bn.running_mean * factor
        if module.bias is not None:
            bias = bias + module.bias * factor
        module.weight.mul_(factor.reshape(-1, 1, 1, 1).to(module.weight.dtype))
        module.bias = nn.Parameter(bias.to(module.weight.dtype), requires_grad=False)
        module.norm = None
        folded += 1
    return folded


def prepare_for_inference(model, channels_last=None, precision="fp32"):
    """Eval mode, batch norms folded (:func:`fold_batch_norms`), channels-last weights on the CPU,
    the backbone's weights in ``precision``.

    Args:
        model (nn.Module): a detectron2 model with its weights loaded; changed in place.
        channels_last (bool or None): None = when the model's parameters are on the CPU.
        precision (str): a ``SNIPER.TEST.PRECISION`` value; the predictor running the model must
            resolve to the same (pass the config's value).

    Returns:
        the same model.
    """
    model.eval()
    fold_batch_norms(model)
    if channels_last is None:
        first = next(model.parameters(), None)
        channels_last = first is not None and first.device.type == "cpu"
    if channels_last:
        model.to(memory_format=torch.channels_last)
    cast_backbone(model, resolve_precision(precision, model_device_type(model)))
    return model
