"""benchmarks/bench_accuracy.py's figures over seeds: summaries, rankings and the README's markdown tables.

Numpy only (through :mod:`lab.experiment`'s ``mean_spread``).
"""

from .experiment import mean_spread

__all__ = ["METRICS", "METHODS", "NEG_MODELS", "spread", "summarize", "ranking", "markdown_tables"]

METRICS = ("AP", "AP50", "APs", "APm", "APl")
METHODS = {"sniper": "SNIPER (suggested scales)", "sliced": "sliced (every tile, one scale)",
           "baseline": "equal-pixel single scale"}
NEG_MODELS = {"positives": "SNIPER, positive chips only", "negatives": "SNIPER, + negative chips"}


def spread(values):
    m, s, lo, hi = mean_spread([v for v in values if v is not None])
    return {"mean": m, "std": s, "min": lo, "max": hi, "n": sum(v is not None and v == v for v in values)}


def summarize(entries):
    """mean/std/min/max over seeds of every figure of a list of runs."""
    summary = {m: spread([e["bbox"][m] for e in entries]) for m in METRICS}
    if all("bbox_mid" in e for e in entries):
        summary["mid"] = {m: spread([e["bbox_mid"][m] for e in entries]) for m in METRICS}
    summary["seconds_per_iter"] = spread([e["seconds_per_iter"] for e in entries])
    if "fp_at_50_recall" in entries[0]:
        summary["fp_at_50_recall"] = spread([e["fp_at_50_recall"] for e in entries])
        summary["reached_50_recall"] = sum(e["fp_at_50_recall"] is not None for e in entries)
    return summary


def ranking(summary, names, key=None):
    """Methods by mean AP, best first (at the end, or at the half-way evaluation with ``key="mid"``)."""
    ap = {n: (summary[n][key] if key else summary[n])["AP"]["mean"] for n in names
          if n in summary and (key is None or key in summary[n])}
    return sorted(ap, key=ap.get, reverse=True)


def _cell(s, digits=1):
    if s is None or s["n"] == 0:
        return "-"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


def markdown_tables(figures):
    """The README's tables (mean ± sample std over seeds) from the results' figures."""
    st, summary = figures["settings"], figures["summary"]
    lines = [f"Seeds {st['seeds']}, {st['iters']} iterations per model from scratch (configs/sniper_tiny_cpu.yaml: "
             f"ResNet-18-FPN, 4 chips of 256 px per iteration or the same pixels as whole images); "
             f"mean ± sample std over seeds (n per row)"
             + ("." if figures.get("final", True) else "; PARTIAL: the bench has not finished every run.")]
    for name, d in figures["by_dataset"].items():
        t = d["traits"]
        lines += ["", f"**{name}** ({d['case']}: {100 * t['in_band_fraction']:.0f}% of objects in the band at "
                  f"slicing's {d['slice_scale']:g}x, {100 * t['background_tile_fraction']:.0f}% background tiles, "
                  f"{t['tiles_per_image']:.1f} tiles per image)", "",
                  "| method | n | AP | AP50 | APs | APm | APl | AP at half-way | FP/img at 50% recall | s/iter |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for m, label in METHODS.items():
            s = summary.get(f"{name} | {m}")
            if s:
                lines.append(f"| {label} | {s['AP']['n']} | " + " | ".join(_cell(s[k]) for k in METRICS)
                             + f" | {_cell(s.get('mid', {}).get('AP'))} | {_cell(s.get('fp_at_50_recall'), 2)}"
                             f" | {_cell(s['seconds_per_iter'], 2)} |")
        lines.append(f"\nranking by mean AP at the end: {' > '.join(d['ranking_end'])}; half-way: "
                     f"{' > '.join(d['ranking_mid']) or '-'}")
    rows = [(k, summary[f"negatives | {k}"]) for k in NEG_MODELS if f"negatives | {k}" in summary]
    if rows:
        lines += ["", f"**negative chips** (synthetic set: the SNIPER model continued {st['neg_iters']} iterations)",
                  "",
                  "| model | n | AP | APs | APm | APl | FP/img at 50% recall (clutter) | reached 50% recall |",
                  "|---|---|---|---|---|---|---|---|"]
        for k, s in rows:
            cells = " | ".join(_cell(s[m]) for m in ("AP", "APs", "APm", "APl"))
            lines.append(f"| {NEG_MODELS[k]} | {s['AP']['n']} | {cells} | {_cell(s.get('fp_at_50_recall'), 2)} | "
                         f"{s.get('reached_50_recall', '-')}/{s['AP']['n']} |")
    return "\n".join(lines)
