"""Every shipped config loads and builds its model on CPU (no weights, no data needed)."""

import glob
import os

import pytest
from detectron2.config import get_cfg
from detectron2.modeling import build_model

import sniper_d2.modeling  # noqa: F401  (registers SniperRPN, SniperROIHeads)
from conftest import ROOT
from sniper_d2.config import add_sniper_config
from sniper_d2.weights import WeightsError, resolve_weights

CONFIGS = sorted(p for p in glob.glob(os.path.join(ROOT, "configs", "**", "*.yaml"), recursive=True)
                 if not os.path.basename(p).startswith("Base-"))


def test_the_expected_configs_are_shipped():
    names = {os.path.relpath(p, os.path.join(ROOT, "configs")) for p in CONFIGS}
    assert {"sniper_r50_fpn.yaml", "sniper_tiny_cpu.yaml", "faster_rcnn_tiny_cpu.yaml",
            "visdrone/sniper_r50_fpn_1x.yaml", "visdrone/faster_rcnn_r50_fpn_1x.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.relpath(p, ROOT))
def test_config_loads_and_builds_its_model(path):
    cfg = get_cfg()
    add_sniper_config(cfg)
    cfg.merge_from_file(path)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    assert len(cfg.SNIPER.SCALES) == len(cfg.SNIPER.VALID_RANGES) == len(cfg.SNIPER.NEG.MIN_PROPOSALS)
    assert len(cfg.SNIPER.TEST.SCALES) == len(cfg.SNIPER.TEST.VALID_RANGES)
    model = build_model(cfg)
    assert type(model.proposal_generator).__name__ == "SniperRPN"
    assert type(model.roi_heads).__name__ == "SniperROIHeads"


def test_remote_weights_without_cache_give_a_clear_error(tmp_path, monkeypatch):
    import urllib.error

    import iopath.common.file_io

    def no_internet(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(iopath.common.file_io, "download", no_internet)  # what a machine without internet gives
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path))
    with pytest.raises(WeightsError, match=r"MODEL.WEIGHTS /path/to/R-50.pkl"):
        resolve_weights("detectron2://ImageNetPretrained/MSRA/R-50.pkl")
    cached = tmp_path / "detectron2" / "ImageNetPretrained" / "MSRA" / "R-50.pkl"
    cached.parent.mkdir(parents=True, exist_ok=True)  # the failed download made the folder
    cached.write_bytes(b"x")
    assert resolve_weights("detectron2://ImageNetPretrained/MSRA/R-50.pkl") == str(cached)
    with pytest.raises(WeightsError, match="nope.pth not found"):
        resolve_weights(str(tmp_path / "nope.pth"))
    assert resolve_weights("") == ""
