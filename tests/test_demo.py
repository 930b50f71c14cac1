"""The README's demo runs end to end (tiny settings: every step, a few iterations)."""

import json
import subprocess
import sys

from conftest import ROOT


def test_demo_runs_every_step_and_leaves_results_and_drawings(tmp_path):
    out, data = tmp_path / "demo", tmp_path / "data"
    proc = subprocess.run([sys.executable, "tools/demo.py", "--iters", "2", "--neg-iters", "2", "--train-images", "3",
                           "--val-images", "2", "--clutter-images", "1",
                           "--min-side", "300", "--max-side", "360", "--output", str(out), "--data", str(data)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "COCO box AP on the synthetic validation set" in proc.stdout
    assert "False positives per image on the distractor-heavy split" in proc.stdout
    for name in ("sniper", "sliced", "baseline", "sniper_pos_more", "sniper_neg"):
        results = json.loads((out / name / "eval_results.json").read_text())
        assert results["format"] == "sniper_d2.eval_results"
        assert {"synthetic_val", "synthetic_clutter"} <= set(results["results"])
    assert (out / "proposals.npz").is_file()
    drawn = sorted(p.name for p in (out / "detections").iterdir())
    assert drawn.count("results.json") == 1 and sum(n.startswith("val_") for n in drawn) == 2
