"""An oracle detector registered as a detectron2 meta-architecture, and tools/infer.py run with it.

Imported by tests; run as a script (``python tests/infer_oracle.py <infer.py arguments>``) it runs
tools/infer.py with the oracle registered in every process, including the processes that
``--num-gpus N`` spawns (they re-import this script). ``SNIPER_ORACLE_FAIL_AFTER=K`` makes the
oracle raise after K forward passes: an interrupted run; ``SNIPER_ORACLE_KILL_AFTER=K`` makes its
process kill itself (SIGKILL: no clean-up of any kind) after K forward passes.
"""

import os
import signal
import sys

import torch
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import Boxes, Instances

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tools"))
sys.path.insert(0, os.path.dirname(HERE))  # this checkout's sniper_d2, whatever is installed
from test_stitching_oracle import visible_rectangles  # noqa: E402


@META_ARCH_REGISTRY.register()
class FolderOracle(torch.nn.Module):
    """The coloured rectangles visible in each tile; score (class + 1) / 3."""

    calls = 0  # forward passes in this process

    def __init__(self, cfg):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # something for the checkpoint to hold

    def forward(self, inputs):
        FolderOracle.calls += 1
        fail_after = int(os.environ.get("SNIPER_ORACLE_FAIL_AFTER", "0"))
        if fail_after and FolderOracle.calls > fail_after:
            raise RuntimeError("oracle: interrupted (SNIPER_ORACLE_FAIL_AFTER)")
        kill_after = int(os.environ.get("SNIPER_ORACLE_KILL_AFTER", "0"))
        if kill_after and FolderOracle.calls > kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
        outputs = []
        for item in inputs:
            boxes, classes = visible_rectangles(item["image"].permute(1, 2, 0).numpy())
            inst = Instances((item["height"], item["width"]))
            inst.pred_boxes = Boxes(torch.as_tensor(boxes))
            inst.scores = torch.as_tensor((classes + 1) / 3.0, dtype=torch.float32)
            inst.pred_classes = torch.as_tensor(classes)
            outputs.append({"instances": inst})
        return outputs


if __name__ == "__main__":
    import infer  # tools/infer.py

    from sniper_d2.cli import run_main

    run_main(infer.main, "infer.py", sys.argv[1:])
