"""The offload simulator's capacity plot: offload vs capacity for the shipped policy and LRU, a PNG with
matplotlib installed, else an SVG written by hand."""
from __future__ import annotations

from pathlib import Path

TB = 10**12


def plot(points: list[tuple[int, float, float, int]], target: float, out: Path) -> Path:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return svg_plot(points, target, out.with_suffix(".svg"))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = [p[0] / TB for p in points]
    ax.plot(xs, [p[1] for p in points], "o-", label="shipped fill policy")
    ax.plot(xs, [p[2] for p in points], "s--", label="LRU pull-through")
    ax.axhline(target, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("cache capacity (TB)")
    ax.set_ylabel("byte hit ratio (offload)")
    ax.set_ylim(0, 1)
    ax.legend()
    ax.grid(alpha=0.3)
    path = out.with_suffix(".png")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def svg_plot(points: list[tuple[int, float, float, int]], target: float, path: Path) -> Path:
    w, h, m = 640, 400, 50
    xmax = max(p[0] for p in points) / TB

    def xy(x: float, y: float) -> str:
        return f"{m + (w - 2 * m) * x / xmax:.1f},{h - m - (h - 2 * m) * y:.1f}"

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" '
             f'font-size="12"><rect width="100%" height="100%" fill="white"/>',
             f'<line x1="{m}" y1="{h - m}" x2="{w - m}" y2="{h - m}" stroke="black"/>',
             f'<line x1="{m}" y1="{m}" x2="{m}" y2="{h - m}" stroke="black"/>']
    for i in range(6):
        y = i / 5
        parts.append(f'<text x="{m - 8}" y="{h - m - (h - 2 * m) * y + 4:.1f}" text-anchor="end">{y:.1f}</text>')
        x = xmax * i / 5
        parts.append(f'<text x="{m + (w - 2 * m) * i / 5:.1f}" y="{h - m + 18}" text-anchor="middle">{x:.1f}</text>')
    t1, t2 = xy(0, target).split(","), xy(xmax, target).split(",")
    parts.append(f'<line x1="{t1[0]}" y1="{t1[1]}" x2="{t2[0]}" y2="{t2[1]}" stroke="grey" stroke-dasharray="3,3"/>')
    for idx, colour, label in ((1, "#1f77b4", "shipped fill policy"), (2, "#ff7f0e", "LRU pull-through")):
        pts = " ".join(xy(p[0] / TB, p[idx]) for p in points)
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="2"/>')
        parts.append(f'<text x="{w - m - 120}" y="{m + 20 * idx}" fill="{colour}">{label}</text>')
    parts.append(f'<text x="{w / 2}" y="{h - 10}" text-anchor="middle">cache capacity (TB)</text>')
    parts.append(f'<text x="14" y="{h / 2}" transform="rotate(-90 14 {h / 2})" text-anchor="middle">'
                 f'byte hit ratio</text></svg>')
    path.write_text("\n".join(parts))
    return path
