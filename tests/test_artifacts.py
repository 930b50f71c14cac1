"""Files we write: atomic, versioned, refused when foreign, truncated or stale."""

import json
import os

import numpy as np
import pytest

from sniper_d2.io import (ArtifactError, atomic_open, load_json_artifact, load_npz_artifact,
                          save_json_artifact, save_npz_artifact)


def test_atomic_open_leaves_old_file_when_writer_fails(tmp_path):
    path = tmp_path / "out.json"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_open(path) as f:
            f.write("half of the new con")
            raise RuntimeError("killed")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.json"], "the temporary file must be removed"


def test_json_artifact_round_trip_and_version_check(tmp_path):
    path = tmp_path / "a.json"
    save_json_artifact(path, "sniper_d2.test", 2, {"x": [1, 2]})
    assert load_json_artifact(path, "sniper_d2.test", 2)["x"] == [1, 2]
    with pytest.raises(ArtifactError, match="version 2 is not supported"):
        load_json_artifact(path, "sniper_d2.test", 3)
    with pytest.raises(ArtifactError, match="expected a 'sniper_d2.other' file"):
        load_json_artifact(path, "sniper_d2.other", 2)


def test_truncated_json_artifact_is_detected(tmp_path):
    path = tmp_path / "a.json"
    save_json_artifact(path, "sniper_d2.test", 1, {"x": list(range(100))})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match=r"a\.json: not valid JSON"):
        load_json_artifact(path, "sniper_d2.test", 1)


def test_npz_artifact_round_trip(tmp_path):
    path = tmp_path / "p.npz"
    arrays = {"boxes": np.arange(8, dtype=np.float32).reshape(2, 4)}
    save_npz_artifact(path, "sniper_d2.test", 1, {"hash": "abc"}, arrays)
    header, loaded = load_npz_artifact(path, "sniper_d2.test", 1)
    assert header["hash"] == "abc"
    np.testing.assert_array_equal(loaded["boxes"], arrays["boxes"])


@pytest.mark.parametrize("cut", [0.3, 0.9])
def test_truncated_npz_artifact_is_detected(tmp_path, cut):
    path = tmp_path / "p.npz"
    save_npz_artifact(path, "sniper_d2.test", 1, {}, {"x": np.random.default_rng(0).random(5000)})
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(ArtifactError, match=r"p\.npz: cannot be read"):
        load_npz_artifact(path, "sniper_d2.test", 1)


def test_foreign_npz_without_header_is_refused(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, x=np.zeros(3))
    with pytest.raises(ArtifactError, match="no sniper_d2 header"):
        load_npz_artifact(path, "sniper_d2.test", 1)


def test_missing_artifact_names_the_path(tmp_path):
    with pytest.raises(ArtifactError, match="nope.npz: file not found"):
        load_npz_artifact(tmp_path / "nope.npz", "sniper_d2.test", 1)
    with pytest.raises(ArtifactError, match="nope.json: file not found"):
        load_json_artifact(tmp_path / "nope.json", "sniper_d2.test", 1)


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_written_files_follow_the_umask_like_open(tmp_path, umask):
    old = os.umask(umask)
    try:
        with open(tmp_path / "plain.txt", "w") as f:
            f.write("x")
        save_json_artifact(tmp_path / "a.json", "sniper_d2.test", 1, {"x": 1})
        save_npz_artifact(tmp_path / "a.npz", "sniper_d2.test", 1, {}, {"x": np.zeros(3)})
    finally:
        os.umask(old)
    expected = os.stat(tmp_path / "plain.txt").st_mode & 0o777
    assert expected == 0o666 & ~umask
    for name in ("a.json", "a.npz"):
        assert os.stat(tmp_path / name).st_mode & 0o777 == expected, name
