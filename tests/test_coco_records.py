"""COCO json reading: bad annotations are dropped or clipped and counted, bad files named."""

import json
import logging

import numpy as np
import pytest

from sniper_d2.coco import DatasetError, images_hash, load_coco_records, records_to_coco_json


def write(tmp_path, data, name="d.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


def base(annotations, images=None):
    return {"images": images or [{"id": 1, "file_name": "a.jpg", "height": 100, "width": 200}],
            "annotations": annotations,
            "categories": [{"id": 3, "name": "car"}, {"id": 7, "name": "bus"}]}


def ann(bbox, cat=3, image_id=1, **kw):
    return dict({"image_id": image_id, "bbox": bbox, "category_id": cat}, **kw)


def test_xywh_becomes_xyxy_and_categories_sorted(tmp_path):
    recs, cats = load_coco_records(write(tmp_path, base([ann([10, 20, 30, 40], cat=7, iscrowd=1)])))
    np.testing.assert_allclose(recs[0]["boxes"], [[10, 20, 40, 60]])
    assert recs[0]["category_ids"].tolist() == [7] and recs[0]["iscrowd"].tolist() == [True]
    assert [c["id"] for c in cats] == [3, 7]


def test_degenerate_boxes_are_dropped_and_counted(tmp_path, caplog):
    anns = [ann([10, 10, 0, 5]), ann([10, 10, -3, 5]), ann([float("nan"), 1, 2, 2]),
            ann([500, 500, 10, 10]), ann([-5, -5, 20, 20]), ann([1, 1, 2, 2], cat=99),
            ann([1, 1, 2, 2], image_id=42), ann([5, 5, 10, 10])]
    with caplog.at_level(logging.WARNING):
        recs, _ = load_coco_records(write(tmp_path, base(anns)))
    np.testing.assert_allclose(recs[0]["boxes"], [[0, 0, 15, 15], [5, 5, 15, 15]])
    msg = caplog.text
    for part in ("2 of zero or negative size", "1 with NaN/inf coordinates", "1 entirely outside their image",
                 "1 clipped to their image", "1 unknown category id", "1 annotation of an unknown image id"):
        assert part in msg, part
    assert "d.json" in msg


def test_image_without_annotations_is_kept(tmp_path):
    images = [{"id": 1, "file_name": "a.jpg", "height": 10, "width": 10},
              {"id": 2, "file_name": "b.jpg", "height": 10, "width": 10}]
    recs, _ = load_coco_records(write(tmp_path, base([ann([1, 1, 2, 2])], images)))
    assert [len(r["boxes"]) for r in recs] == [1, 0]
    assert recs[1]["boxes"].shape == (0, 4)


@pytest.mark.parametrize("text, match", [
    ("{not json", "not valid JSON"),
    ('{"annotations": []}', "no 'images' list"),
    ('{"images": [{"id": 1, "file_name": "a.jpg"}]}', "lacks key"),
    ('{"images": [{"id": 1, "file_name": "a.jpg", "height": 0, "width": 5}]}', "has size"),
    ('{"images": [{"id": 1, "file_name": "a.jpg", "height": 5, "width": 5}], '
     '"annotations": [{"image_id": 1, "bbox": [1, 2], "category_id": 1}]}', "not 4 numbers"),
])
def test_malformed_json_names_the_file(tmp_path, text, match):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(DatasetError, match=match) as err:
        load_coco_records(str(path))
    assert "bad.json" in str(err.value)


def test_missing_json_is_named(tmp_path):
    with pytest.raises(DatasetError, match="nothere.json: data set json not found"):
        load_coco_records(str(tmp_path / "nothere.json"))


def test_empty_dataset_loads_as_no_records(tmp_path):
    recs, _ = load_coco_records(write(tmp_path, {"images": [], "annotations": [], "categories": []}))
    assert recs == []


def test_round_trip_and_images_hash(tmp_path):
    data = base([ann([10, 20, 30, 40]), ann([0, 0, 5, 5], cat=7)])
    recs, cats = load_coco_records(write(tmp_path, data))
    again, _ = load_coco_records(write(tmp_path, records_to_coco_json(recs, cats), "rt.json"))
    np.testing.assert_allclose(again[0]["boxes"], recs[0]["boxes"])
    other = base([], [{"id": 1, "file_name": "z.jpg", "height": 100, "width": 200}])
    assert images_hash(recs) == images_hash(again)
    assert images_hash(recs) != images_hash(load_coco_records(write(tmp_path, other, "o.json"))[0])
