#!/usr/bin/env python3
"""Draws throughput and p99 latency against concurrency from `annals load --json` reports.

    python3 app/bench/chart.py OUT.svg REPORT.json [REPORT.json ...]

One line per target kind (in-process, HTTP) and durability; closed-loop reports only (the
x axis is --concurrency). Standard library only: the SVG is written by hand, so the chart can
be regenerated on a fresh machine.
"""

import json
import math
import sys
from collections import defaultdict

WIDTH, HEIGHT = 960, 420
PANEL_W, PANEL_H = 380, 290
MARGIN_L, MARGIN_T = 70, 60
GAP = 110
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


def series_name(report):
    kind = "in-process" if report["target"] == "inproc" else "HTTP"
    durability = report.get("durability") or "durable"
    return f"{kind}, {report['workload']}, {durability}"


def load(paths):
    series = defaultdict(list)
    for path in paths:
        with open(path, encoding="utf-8") as f:
            report = json.load(f)
        if report.get("shape") != "closed" or not report.get("concurrency"):
            continue
        series[series_name(report)].append(
            (report["concurrency"], report["throughput_per_s"], report["latency_us"]["p99"] / 1000.0)
        )
    return {name: sorted(points) for name, points in sorted(series.items())}


def nice_max(value):
    if value <= 0:
        return 1.0
    exponent = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * exponent:
            return step * exponent
    return 10 * exponent


def panel(out, x0, title, series, pick, unit, xs):
    ymax = nice_max(max((pick(p) for pts in series.values() for p in pts), default=1.0))
    xmin, xmax = math.log2(min(xs)), math.log2(max(xs))
    span = max(xmax - xmin, 1.0)

    def px(x):
        return x0 + (math.log2(x) - xmin) / span * PANEL_W

    def py(y):
        return MARGIN_T + PANEL_H - y / ymax * PANEL_H

    out.append(f'<text x="{x0 + PANEL_W / 2}" y="{MARGIN_T - 20}" text-anchor="middle" font-weight="bold">{title}</text>')
    out.append(f'<rect x="{x0}" y="{MARGIN_T}" width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="#999"/>')
    for i in range(6):
        y = ymax * i / 5
        out.append(f'<line x1="{x0}" x2="{x0 + PANEL_W}" y1="{py(y)}" y2="{py(y)}" stroke="#eee"/>')
        label = f"{y:,.0f}" if ymax >= 10 else f"{y:.1f}"
        out.append(f'<text x="{x0 - 6}" y="{py(y) + 4}" text-anchor="end" font-size="11">{label}</text>')
    for x in sorted(set(xs)):
        out.append(f'<text x="{px(x)}" y="{MARGIN_T + PANEL_H + 16}" text-anchor="middle" font-size="11">{x}</text>')
    out.append(f'<text x="{x0 + PANEL_W / 2}" y="{MARGIN_T + PANEL_H + 34}" text-anchor="middle" font-size="12">concurrent clients (log scale)</text>')
    out.append(f'<text x="{x0 - 52}" y="{MARGIN_T + PANEL_H / 2}" text-anchor="middle" font-size="12" transform="rotate(-90 {x0 - 52} {MARGIN_T + PANEL_H / 2})">{unit}</text>')
    for color, (name, points) in zip(COLORS, series.items()):
        path = " ".join(f"{px(c):.1f},{py(pick((c, t, l))):.1f}" for c, t, l in points)
        out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        for c, t, l in points:
            out.append(f'<circle cx="{px(c):.1f}" cy="{py(pick((c, t, l))):.1f}" r="3" fill="{color}"/>')


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    series = load(sys.argv[2:])
    if not series:
        sys.exit("no closed-loop reports among the files given")
    xs = [c for pts in series.values() for c, _, _ in pts]
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT + 20 * len(series)}" '
        'font-family="sans-serif" font-size="13">',
        f'<rect width="100%" height="100%" fill="white"/>',
    ]
    panel(out, MARGIN_L, "Throughput", series, lambda p: p[1], "commands/s", xs)
    panel(out, MARGIN_L + PANEL_W + GAP, "p99 latency", series, lambda p: p[2], "ms", xs)
    for i, (color, name) in enumerate(zip(COLORS, series)):
        y = HEIGHT - 10 + 20 * i
        out.append(f'<rect x="{MARGIN_L}" y="{y - 10}" width="14" height="4" fill="{color}"/>')
        out.append(f'<text x="{MARGIN_L + 22}" y="{y - 4}">{name}</text>')
    out.append("</svg>")
    with open(sys.argv[1], "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
