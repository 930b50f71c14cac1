"""AutoFocus's focus branch: labels, head, and a GeneralizedRCNN that trains and returns it.

A *focus map* is a coarse grid over the network input (one FPN level, ``stride`` pixels per cell):
cell ``(i, j)`` covers input pixels ``[j*stride, (j+1)*stride) x [i*stride, (i+1)*stride)`` and says
"an object too small for this scale is here", i.e. the next finer scale should look at it (Najibi,
Singh, Davis, "AutoFocus: Efficient Multi-Scale Inference", ICCV 2019).

Labels (:func:`focus_labels`), per training chip, from its boxes in chip pixels; the size of a box
is ``sqrt(w*h)`` of the UNCLIPPED box in chip pixels (``Instances.gt_sizes`` from the mapper; a box
cut by the chip border keeps its real size, so a sliver of a large object is not "small"):

- positive (1): the cell overlaps a box of size in ``[lo, hi)`` (``SNIPER.AUTOFOCUS.POSITIVE_RANGE``);
- don't care (-1): otherwise, the cell overlaps a box of size below ``lo`` or in ``[hi, ignore_up_to)``
  (the margin band), or a crowd / ignore region (``Instances.gt_crowd``, when ``crowd_as_ignore``);
- negative (0): elsewhere (background, large objects, the chip's zero padding).

Positive wins over don't care, don't care over negative. With ``positive_min_side`` (chip px,
``SNIPER.AUTOFOCUS.POSITIVE_MIN_SIDE``) a positive box narrower or shorter than that marks the cells
of a box grown about its centre to that side: a 6 px object at stride 8 marks a 3 x 3 block of cells
around it instead of one or two, so tiny objects weigh in the loss like larger ones. Whether a box is a *valid detector target*
for the chip (``gt_valid``) does not matter here: an object outside the chip's detection range is
exactly what the focus branch must see (too small: positive) or may ignore.

Importing this module registers ``MODEL.META_ARCHITECTURE: "SniperFocusRCNN"``.
"""

import math

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN, detector_postprocess
from torch import nn

__all__ = ["focus_labels", "FocusHead", "SniperFocusRCNN"]


def focus_labels(boxes, sizes, ignore_region, grid_size, stride, positive_range, ignore_up_to, positive_min_side=0.0):
    """Focus labels of one chip (see the module docstring for the rules).

    Args:
        boxes: (N, 4) float tensor XYXY in chip (input) pixels.
        sizes: (N,) float tensor, sqrt(w*h) of each unclipped box in chip pixels.
        ignore_region: (N,) bool tensor, True for crowd / ignore regions (their cells: don't care).
        grid_size: (Hc, Wc) cells of the map.
        stride (int): input pixels per cell.
        positive_range: (lo, hi) chip pixels; ignore_up_to (float): end of the don't-care band.
        positive_min_side (float): chip pixels; positive boxes are grown about their centre to at
            least this width and height before marking cells (0: as they are).

    Returns:
        (Hc, Wc) int8 tensor on ``boxes``' device: 1 positive, 0 negative, -1 don't care.
    """
    hc, wc = (int(v) for v in grid_size)
    device = boxes.device
    labels = torch.zeros((hc, wc), dtype=torch.int8, device=device)
    boxes = boxes.reshape(-1, 4).float()
    if boxes.shape[0] == 0:
        return labels
    lo, hi = float(positive_range[0]), float(positive_range[1])
    sizes = sizes.reshape(-1).float().to(device)
    region = ignore_region.reshape(-1).to(device=device, dtype=torch.bool)
    real = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    edges_x = torch.arange(wc, device=device, dtype=torch.float32) * stride
    edges_y = torch.arange(hc, device=device, dtype=torch.float32) * stride

    def cells_overlapped(b):  # (N, 4) boxes -> (N, Hc, Wc) bool
        over_x = (b[:, None, 0] < edges_x + stride) & (b[:, None, 2] > edges_x)  # (N, Wc)
        over_y = (b[:, None, 1] < edges_y + stride) & (b[:, None, 3] > edges_y)  # (N, Hc)
        return over_y[:, :, None] & over_x[:, None, :] & real[:, None, None]

    positive = ~region & (sizes >= lo) & (sizes < hi)
    dont_care = region | (sizes < lo) | ((sizes >= hi) & (sizes < float(ignore_up_to)))
    labels[(cells_overlapped(boxes) & dont_care[:, None, None]).any(dim=0)] = -1
    grown = boxes
    if positive_min_side > 0:
        center = (boxes[:, :2] + boxes[:, 2:]) / 2
        half = ((boxes[:, 2:] - boxes[:, :2]) / 2).clamp(min=float(positive_min_side) / 2)
        grown = torch.cat([center - half, center + half], dim=1)
    labels[(cells_overlapped(grown) & positive[:, None, None]).any(dim=0)] = 1
    return labels


class FocusHead(nn.Module):
    """3x3 conv + ReLU + 1x1 conv: (B, C, Hc, Wc) features -> (B, Hc, Wc) focus logits."""

    def __init__(self, in_channels, channels=64):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, channels, kernel_size=3, padding=1)
        self.logits = nn.Conv2d(channels, 1, kernel_size=1)
        for layer in (self.conv, self.logits):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.constant_(layer.bias, 0.0)
        # Start near the prior of a rare positive (as RetinaNet does), so early losses are small.
        nn.init.constant_(self.logits.bias, -math.log((1 - 0.05) / 0.05))

    def forward(self, x):
        return self.logits(F.relu(self.conv(x)))[:, 0]


@META_ARCH_REGISTRY.register()
class SniperFocusRCNN(GeneralizedRCNN):
    """GeneralizedRCNN plus AutoFocus's focus head on one FPN level.

    Training: the stock losses plus ``loss_focus`` (binary cross-entropy over the cells that are not
    don't care, positive cells weighted ``SNIPER.AUTOFOCUS.POSITIVE_WEIGHT``, times
    ``SNIPER.AUTOFOCUS.LOSS_WEIGHT``), from :func:`focus_labels` of each chip's
    ``Instances``. Inference: the stock outputs, each dict also carrying ``"focus"``: (Hc, Wc)
    float32 probabilities for the input image's own pixels (padding cut off,
    ``Hc = ceil(h / stride)``; frame: the input image as given, before detectron2's postprocess
    resize) and ``"focus_stride"`` (int). With ``SNIPER.AUTOFOCUS.ENABLED False`` it is exactly
    GeneralizedRCNN.
    """

    @configurable
    def __init__(self, *, focus_head=None, focus_in_feature="p4", focus_stride=16, positive_range=(5.0, 64.0),
                 ignore_up_to=90.0, crowd_as_ignore=True, focus_loss_weight=1.0, positive_weight=1.0,
                 positive_min_side=0.0, **kwargs):
        super().__init__(**kwargs)
        self.focus_head = focus_head
        self.focus_in_feature = focus_in_feature
        self.focus_stride = int(focus_stride)
        self.positive_range = tuple(float(v) for v in positive_range)
        self.ignore_up_to = float(ignore_up_to)
        self.crowd_as_ignore = crowd_as_ignore
        self.focus_loss_weight = float(focus_loss_weight)
        self.positive_weight = float(positive_weight)
        self.positive_min_side = float(positive_min_side)

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        a = cfg.SNIPER.AUTOFOCUS
        if not a.ENABLED:
            return ret
        shapes = ret["backbone"].output_shape()
        if a.IN_FEATURE not in shapes:
            raise ValueError(f"SNIPER.AUTOFOCUS.IN_FEATURE {a.IN_FEATURE!r} is not a backbone output "
                             f"(have {sorted(shapes)})")
        lo, hi = (float(v) for v in a.POSITIVE_RANGE)
        if not 0 <= lo < hi <= float(a.IGNORE_UP_TO):
            raise ValueError(f"SNIPER.AUTOFOCUS: need 0 <= POSITIVE_RANGE lo < hi <= IGNORE_UP_TO, got "
                             f"{tuple(a.POSITIVE_RANGE)} and {a.IGNORE_UP_TO}")
        if a.POSITIVE_WEIGHT <= 0 or a.POSITIVE_MIN_SIDE < 0:
            raise ValueError(f"SNIPER.AUTOFOCUS: need POSITIVE_WEIGHT > 0 and POSITIVE_MIN_SIDE >= 0, got "
                             f"{a.POSITIVE_WEIGHT} and {a.POSITIVE_MIN_SIDE}")
        shape = shapes[a.IN_FEATURE]
        ret.update(focus_head=FocusHead(shape.channels, int(a.HEAD_CHANNELS)), focus_in_feature=a.IN_FEATURE,
                   focus_stride=shape.stride, positive_range=(lo, hi), ignore_up_to=float(a.IGNORE_UP_TO),
                   crowd_as_ignore=bool(a.CROWD_AS_IGNORE), focus_loss_weight=float(a.LOSS_WEIGHT),
                   positive_weight=float(a.POSITIVE_WEIGHT), positive_min_side=float(a.POSITIVE_MIN_SIDE))
        return ret

    def focus_loss(self, logits, gt_instances):
        """BCE of ``logits`` (B, Hc, Wc) against the chips' labels, positive cells weighted
        ``positive_weight``, summed over the cells that are not don't care, divided by their count."""
        labels = []
        for inst in gt_instances:
            boxes = inst.gt_boxes.tensor
            sizes = inst.gt_sizes if inst.has("gt_sizes") else \
                ((boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)).sqrt()
            crowd = inst.gt_crowd if (self.crowd_as_ignore and inst.has("gt_crowd")) else \
                torch.zeros(len(inst), dtype=torch.bool, device=boxes.device)
            labels.append(focus_labels(boxes, sizes, crowd, logits.shape[1:], self.focus_stride,
                                       self.positive_range, self.ignore_up_to, self.positive_min_side))
        labels = torch.stack(labels).to(logits.device)
        cared = labels >= 0
        pos_weight = logits.new_tensor(self.positive_weight)
        loss = F.binary_cross_entropy_with_logits(logits[cared], labels[cared].float(), reduction="sum",
                                                  pos_weight=pos_weight)
        return loss / cared.sum().clamp(min=1) * self.focus_loss_weight

    def forward(self, batched_inputs):
        if not self.training or self.focus_head is None:
            return super().forward(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        features = self.backbone(images.tensor)
        proposals, proposal_losses = self.proposal_generator(images, features, gt_instances)
        _, detector_losses = self.roi_heads(images, features, proposals, gt_instances)
        losses = {**detector_losses, **proposal_losses}
        losses["loss_focus"] = self.focus_loss(self.focus_head(features[self.focus_in_feature]), gt_instances)
        return losses

    def inference(self, batched_inputs, detected_instances=None, do_postprocess=True):
        if self.focus_head is None or detected_instances is not None:
            return super().inference(batched_inputs, detected_instances, do_postprocess)
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        proposals, _ = self.proposal_generator(images, features, None)
        results, _ = self.roi_heads(images, features, proposals, None)
        if not do_postprocess:  # detectron2's contract: bare Instances, no room for the map
            return results
        # detectron2's postprocessing, by its public function: boxes rescaled to each input's
        # "height" x "width" (default: the size it was given at)
        results = [{"instances": detector_postprocess(r, x.get("height", size[0]), x.get("width", size[1]))}
                   for r, x, size in zip(results, batched_inputs, images.image_sizes)]
        focus = torch.sigmoid(self.focus_head(features[self.focus_in_feature])).float()
        s = self.focus_stride
        for out, fmap, (h, w) in zip(results, focus, images.image_sizes):
            out["focus"] = fmap[:math.ceil(h / s), :math.ceil(w / s)]
            out["focus_stride"] = s
        return results
