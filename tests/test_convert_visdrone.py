"""VisDrone -> COCO conversion on hand-written annotation files, checked exactly."""

import json
import subprocess
import sys

import pytest
from PIL import Image

from conftest import ROOT
from sniper_d2.converters.visdrone import VisDroneFormatError, convert_split, parse_annotation_file


def make_split(root, files):
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    for name, (size, text) in files.items():
        Image.new("RGB", size).save(root / "images" / f"{name}.jpg")
        if text is not None:
            (root / "annotations" / f"{name}.txt").write_text(text)
    return root


def test_conversion_is_exact(tmp_path):
    root = make_split(tmp_path / "split", {
        "a": ((200, 100), "10,20,30,40,1,4,0,1\n"      # car
                          "0,0,50,60,0,0,0,0\n"        # ignored region
                          "5,6,7,8,1,11,1,2\n"         # others
                          "1,1,0,5,1,1,0,0\n"),        # zero width: dropped
        "b": ((64, 48), ""),                           # no objects
        "c": ((32, 32), None),                         # no annotation file
    })
    coco = convert_split(str(root), progress=False)
    assert coco["images"] == [
        {"id": 1, "file_name": "a.jpg", "height": 100, "width": 200},
        {"id": 2, "file_name": "b.jpg", "height": 48, "width": 64},
        {"id": 3, "file_name": "c.jpg", "height": 32, "width": 32},
    ]
    assert coco["annotations"] == [
        {"id": 1, "image_id": 1, "category_id": 4, "bbox": [10.0, 20.0, 30.0, 40.0], "area": 1200.0,
         "iscrowd": 0, "ignore": 0, "visdrone_category": 4, "visdrone_score": 1, "truncation": 0, "occlusion": 1},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [0.0, 0.0, 50.0, 60.0], "area": 3000.0,
         "iscrowd": 1, "ignore": 1, "visdrone_category": 0, "visdrone_score": 0, "truncation": 0, "occlusion": 0},
        {"id": 3, "image_id": 1, "category_id": 1, "bbox": [5.0, 6.0, 7.0, 8.0], "area": 56.0,
         "iscrowd": 1, "ignore": 1, "visdrone_category": 11, "visdrone_score": 1, "truncation": 1, "occlusion": 2},
    ]
    assert [c["name"] for c in coco["categories"]][:4] == ["pedestrian", "people", "bicycle", "car"]
    assert len(coco["categories"]) == 10


@pytest.mark.parametrize("line, message", [
    ("1,2,3,4,1,4,0", "expected 8 comma-separated values"),
    ("1,2,x,4,1,4,0,0", "not a number"),
    ("1,2,3,4,1,12,0,0", "object category 12 is outside"),
])
def test_malformed_line_names_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.txt"
    path.write_text("1,2,3,4,1,4,0,0\n" + line + "\n")
    with pytest.raises(VisDroneFormatError, match=rf"bad\.txt:2: {message}"):
        parse_annotation_file(str(path))


def test_cli_writes_json_and_reports_bad_lines_in_one_line(tmp_path):
    root = make_split(tmp_path / "ok", {"a": ((20, 10), "1,1,5,5,1,2,0,0\n")})
    out = tmp_path / "out.json"
    proc = subprocess.run([sys.executable, "tools/convert_visdrone.py", "--root", str(root), "--output", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["annotations"][0]["category_id"] == 2
    bad = make_split(tmp_path / "bad", {"a": ((20, 10), "1,1,5\n")})
    proc = subprocess.run([sys.executable, "tools/convert_visdrone.py", "--root", str(bad), "--output",
                           str(tmp_path / "x.json")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "a.txt:1: expected 8" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x.json").exists()
