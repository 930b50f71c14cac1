"""benchmarks/bench_accuracy.py: figures over seeds, the rankings and the README's tables from its JSON."""

import os
import subprocess
import sys

import pytest
from conftest import ROOT

from lab import accuracy_tables as bench
from sniper_d2.io import save_json_artifact


def _run(seed, ap, mid_ap, fp="no clutter split"):
    entry = {"seed": seed, "bbox": {m: ap + i for i, m in enumerate(bench.METRICS)}, "seconds_per_iter": 0.5,
             "bbox_mid": {m: mid_ap for m in bench.METRICS}, "mid_iter": 75}
    if fp != "no clutter split":  # None: 50% recall never reached
        entry["fp_at_50_recall"], entry["fp_at_score_0.5"] = fp, 1.0
    return entry


def _figures():
    runs = {"dense | sniper": [_run(0, 40, 20), _run(1, 44, 22), _run(2, 42, 21)],
            "dense | sliced": [_run(0, 50, 22), _run(1, 46, 19), _run(2, 48, 20)],
            "dense | baseline": [_run(0, 30, 15), _run(1, 31, 16), _run(2, 32, 17)],
            "negatives | positives": [_run(0, 30, 30, 8.0), _run(1, 32, 30, None)]}
    summary = {k: bench.summarize(v) for k, v in runs.items()}
    methods = {m: summary[f"dense | {m}"] for m in bench.METHODS}
    traits = {"in_band_fraction": 0.98, "background_tile_fraction": 0.02, "tiles_per_image": 9.0}
    return {"settings": {"seeds": [0, 1, 2], "iters": 150, "neg_iters": 60}, "summary": summary, "runs": runs,
            "by_dataset": {"dense": {"case": "one band", "traits": traits, "slice_scale": 1.23,
                                     "AP": {m: {k: s["AP"][k] for k in ("mean", "std", "n")}
                                            for m, s in methods.items()},
                                     "ranking_end": bench.ranking(methods, bench.METHODS),
                                     "ranking_mid": bench.ranking(methods, bench.METHODS, "mid")}}}


def test_summary_is_mean_and_sample_std_over_seeds_and_skips_unreached_recall():
    figures = _figures()
    s = figures["summary"]["dense | sniper"]["AP"]
    assert (s["mean"], s["std"], s["min"], s["max"], s["n"]) == (42.0, 2.0, 40.0, 44.0, 3)
    fp = figures["summary"]["negatives | positives"]
    assert fp["fp_at_50_recall"]["n"] == 1 and fp["reached_50_recall"] == 1  # the seed that never reached 50%


def test_ranking_at_the_end_and_half_way():
    d = _figures()["by_dataset"]["dense"]
    assert d["ranking_end"] == ["sliced", "sniper", "baseline"]
    assert d["ranking_mid"] == ["sniper", "sliced", "baseline"]


def test_table_option_prints_the_markdown_table_from_the_results_json(tmp_path):
    path = str(tmp_path / "bench_accuracy.json")
    save_json_artifact(path, "sniper_d2.benchmark_results", 1, {"benchmark": "bench_accuracy", "figures": _figures()})
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench_accuracy.py"), "--table",
                           "--results", path], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    sliced = next(r for r in rows if r.startswith("| sliced"))
    assert "| 3 | 48.0 ± 2.0 |" in sliced and "20.3 ± 1.5" in sliced  # AP at the end, then half-way
    assert "ranking by mean AP at the end: sliced > sniper > baseline; half-way: sniper > sliced > baseline" \
        in proc.stdout
    assert any(r.startswith("| SNIPER, positive chips only | 2 |") and "8.00 ± 0.00" in r for r in rows)


@pytest.mark.parametrize("bad", ["missing.json"])
def test_table_without_results_is_a_one_line_error(tmp_path, bad):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench_accuracy.py"), "--table",
                           "--results", str(tmp_path / bad)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and bad in proc.stderr
