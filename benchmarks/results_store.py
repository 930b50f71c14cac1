"""Where benchmark figures live: ``benchmarks/results/<name>.json``, one file per benchmark.

Every figure the README or docs/ quote comes from one of these files, and each file says which
machine, commit and date printed it and the command line that did. A benchmark calls
:func:`save_benchmark_results` once, at the end of its run, with whatever it printed as a dict.

Import it from a benchmark script (``sys.path[0]`` is ``benchmarks/`` when one runs
``python benchmarks/bench_x.py``)::

    from results_store import save_benchmark_results
    save_benchmark_results("bench_merge", {"ratio": 1400.0, ...}, args.results)
"""

import datetime
import os
import platform
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from sniper_d2.io import load_json_artifact, save_json_artifact  # noqa: E402

__all__ = ["RESULTS_DIR", "BENCHMARK_FORMAT", "machine_info", "git_commit", "save_benchmark_results",
           "load_benchmark_results", "add_results_argument"]

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
BENCHMARK_FORMAT = "sniper_d2.benchmark_results"
_VERSION = 1


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info():
    """A dict naming the machine: CPU model and count, OS, Python, and torch/CUDA where importable."""
    info = {
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    if "torch" in sys.modules:  # only when the benchmark already uses torch: no import cost otherwise
        torch = sys.modules["torch"]
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return info


def git_commit():
    """``HEAD``'s hash of the repository, with ``+dirty`` when tracked files differ from it."""
    root = os.path.dirname(RESULTS_DIR)
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def add_results_argument(parser, name):
    """Add ``--results PATH`` (default ``benchmarks/results/<name>.json``; ``''`` writes nothing)."""
    parser.add_argument("--results", default=os.path.join(RESULTS_DIR, name + ".json"),
                        help="JSON file for this run's figures, with machine, commit and date "
                             "(default: %(default)s; '' to write none)")


def save_benchmark_results(name, figures, path=None):
    """Write ``figures`` (a JSON-able dict) with machine, commit, date and command; return the path.

    Args:
        name: the benchmark's name (``"bench_merge"``).
        figures: what the run printed, as a dict of numbers, strings, lists and dicts.
        path: the file to write; ``None``: ``benchmarks/results/<name>.json``; ``""``: write nothing.
    """
    if path == "":
        return None
    path = path or os.path.join(RESULTS_DIR, name + ".json")
    payload = {
        "benchmark": name,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git_commit(),
        "command": " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]) if sys.argv else name,
        "machine": machine_info(),
        "figures": figures,
    }
    save_json_artifact(path, BENCHMARK_FORMAT, _VERSION, payload)
    print(f"results written to {path}")
    return path


def load_benchmark_results(path):
    """Inverse of :func:`save_benchmark_results`: the whole payload (figures, machine, commit...)."""
    return load_json_artifact(path, BENCHMARK_FORMAT, _VERSION)
