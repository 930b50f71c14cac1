"""tools/infer.py at scale: N processes, and two "machines" (two process trees on this host joined by
one --dist-url), write the same results.json as one; a run interrupted (an exception, or SIGKILL,
with a torn last line) and resumed writes the same results.json as an uninterrupted one, without
redoing finished images."""

import json
import os
import subprocess
import sys

import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import infer_oracle  # noqa: E402  (registers FolderOracle; puts tools/ on sys.path)
from test_stitching_oracle import make_dataset  # noqa: E402

import infer  # noqa: E402  (tools/infer.py)

ROOT = os.path.dirname(HERE)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("infer_scale")
    gt_path = make_dataset(str(root / "data"), n=5, seed=11)
    torch.save({"model": infer_oracle.FolderOracle(None).state_dict()}, root / "oracle.pth")
    opts = ["MODEL.META_ARCHITECTURE", "FolderOracle", "MODEL.WEIGHTS", str(root / "oracle.pth"),
            "SNIPER.REGISTER_COCO", f'(("infer_scale_gt", "{gt_path}", ""),)', "DATASETS.TEST", '("infer_scale_gt",)',
            "SNIPER.TEST.SCALES", "(1.0, 0.5)", "SNIPER.TEST.VALID_RANGES", "((0, 120), (100, -1))",
            "SNIPER.TEST.TILE_SIZE", "256", "SNIPER.TEST.TILE_OVERLAP", "128", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
            "SNIPER.TEST.TILE_BATCH_SIZE", "4", "DATALOADER.NUM_WORKERS", "0"]
    return str(root / "data"), opts


def args_for(images, out, *extra):
    return ["--config-file", os.path.join(ROOT, "configs/sniper_tiny_cpu.yaml"), "--input", images,
            "--output", str(out), "--no-draw", "--confidence-threshold", "0.1", *extra]


def results(out):
    with open(os.path.join(out, "results.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def one_process(setup, tmp_path_factory):
    images, opts = setup
    out = tmp_path_factory.mktemp("one")
    infer.main(args_for(images, out) + opts)
    return results(out)


@pytest.mark.slow
def test_two_processes_write_the_same_results_as_one(setup, one_process, tmp_path):
    images, opts = setup
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, os.path.join(HERE, "infer_oracle.py"),
                           *args_for(images, tmp_path, "--num-gpus", "2"), *opts],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(one_process) > 20 and len({r["image_id"] for r in one_process}) == 5
    assert results(tmp_path) == one_process
    assert not os.path.exists(tmp_path / "partial")


def test_an_interrupted_run_resumed_writes_the_same_results(setup, one_process, tmp_path, monkeypatch):
    images, opts = setup
    monkeypatch.setenv("SNIPER_ORACLE_FAIL_AFTER", "9")  # dies in the second image (30 tiles an image, 4 a batch)
    infer_oracle.FolderOracle.calls = 0
    with pytest.raises(RuntimeError, match="interrupted"):
        infer.main(args_for(images, tmp_path, "--save-every", "1") + opts)
    assert not (tmp_path / "results.json").exists()
    parts = list((tmp_path / "partial").iterdir())
    assert len(parts) == 1
    assert len(parts[0].read_text().splitlines()) == 2, "the header and the first image"
    monkeypatch.delenv("SNIPER_ORACLE_FAIL_AFTER")
    infer_oracle.FolderOracle.calls = 0
    infer.main(args_for(images, tmp_path, "--resume") + opts)
    assert results(tmp_path) == one_process
    calls_resumed = infer_oracle.FolderOracle.calls
    infer.main(args_for(images, tmp_path, "--resume") + opts)  # already complete: nothing runs
    assert infer_oracle.FolderOracle.calls == calls_resumed and results(tmp_path) == one_process
    infer_oracle.FolderOracle.calls = 0
    infer.main(args_for(images, tmp_path / "again") + opts)
    assert calls_resumed < infer_oracle.FolderOracle.calls, "finished images were run again"


def oracle_cmd(images, out, *extra, opts):
    return [sys.executable, os.path.join(HERE, "infer_oracle.py"), *args_for(images, out, *extra), *opts]


ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


@pytest.mark.slow
def test_two_machines_write_the_same_results_as_one(setup, one_process, tmp_path):
    from sniper_d2.engine import free_local_dist_url

    images, opts = setup
    url = free_local_dist_url()
    machines = [subprocess.Popen(oracle_cmd(images, tmp_path, "--num-machines", "2", "--machine-rank", str(rank),
                                            "--dist-url", url, opts=opts),
                                 cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                for rank in (0, 1)]
    logs = [m.communicate(timeout=300)[0] for m in machines]
    assert [m.returncode for m in machines] == [0, 0], logs[0][-2000:] + logs[1][-2000:]
    assert results(tmp_path) == one_process
    assert not os.path.exists(tmp_path / "partial")  # machine 0 merged both machines' partial files


def test_a_killed_run_with_a_torn_line_resumed_writes_the_same_results(setup, one_process, tmp_path):
    images, opts = setup
    env = dict(ENV, SNIPER_ORACLE_KILL_AFTER="23")  # SIGKILL after about 3 of the 5 images
    killed = subprocess.run(oracle_cmd(images, tmp_path, opts=opts), cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    (part,) = (tmp_path / "partial").iterdir()
    lines = part.read_text().splitlines()
    done = len(lines) - 1  # the first line is the header
    assert 1 <= done < 5 and not (tmp_path / "results.json").exists()
    with open(part, "a") as f:  # a kill in the middle of a write: half of the fourth image's line
        f.write(lines[1][: len(lines[1]) // 2])
    resumed = subprocess.run(oracle_cmd(images, tmp_path, "--resume", opts=opts), cwd=ROOT, env=ENV,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert results(tmp_path) == one_process
    assert f"resuming: {done} of 5 images already done" in resumed.stdout + resumed.stderr


def test_a_damaged_line_before_the_last_is_an_error_naming_the_file_and_line(tmp_path):
    from sniper_d2.inference.folder import PARTIAL_FORMAT, read_partial_file
    from sniper_d2.io import ArtifactError

    path = tmp_path / "part-g000-rank000.jsonl"
    header = json.dumps({"format": PARTIAL_FORMAT[0], "version": PARTIAL_FORMAT[1], "run_key": "k"})
    path.write_text(header + '\n{"image_id": 1}\n{"image_id": 2}\n{"image_')
    assert read_partial_file(str(path), "k") == [{"image_id": 1}, {"image_id": 2}]  # the torn line is dropped
    path.write_text(header + '\n{"image_id": 1\n{"image_id": 2}\n')
    with pytest.raises(ArtifactError, match=r"part-g000-rank000\.jsonl: line 2 is damaged"):
        read_partial_file(str(path), "k")
    path.write_text(header[:10])  # killed while writing the header: nothing done
    assert read_partial_file(str(path), "k") == []


def test_resuming_with_other_settings_is_refused_naming_the_file(setup, tmp_path, monkeypatch):
    from sniper_d2.io import ArtifactError

    images, opts = setup
    monkeypatch.setenv("SNIPER_ORACLE_FAIL_AFTER", "9")
    infer_oracle.FolderOracle.calls = 0
    with pytest.raises(RuntimeError, match="interrupted"):
        infer.main(args_for(images, tmp_path, "--save-every", "1") + opts)
    monkeypatch.delenv("SNIPER_ORACLE_FAIL_AFTER")
    with pytest.raises(ArtifactError, match=r"part-g000-rank000\.jsonl: partial results of another run"):
        infer.main(args_for(images, tmp_path, "--resume") + opts + ["SNIPER.TEST.MERGE_IOU", "0.6"])

