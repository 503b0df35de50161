"""The gap figure: certified (solid), exact (dotted, a shaded band where unproven points
leave an interval) and attack (dashed) robust error per method, one colour per method
(:func:`arml_core.plots.method_colour`). A pure function: data in, plotly figure out."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from .evaluation.gap import robust_error_interval
from .metric import robust_error_curve
from .plots import display_name, method_colour

__all__ = ["gap_figure"]


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def gap_figure(certified_by_method: Mapping[str, np.ndarray], exact_by_method: Mapping, *,
               attack_by_method: Mapping[str, np.ndarray] | None = None, grid: Sequence[float],
               title: str = "Certified ≤ exact ≤ attack") -> go.Figure:
    """Robust error (%) against the l2 radius, one panel per method (at most three a row):
    the certified error (Theorem 1's lower bound on each radius: the highest curve), the
    exact K-NN error (``exact_by_method``: results with ``lower``/``upper``; a shaded band
    where some points are unproven) and the attack's (the lowest curve). The vertical
    distance between the curves is the gap the two bounds leave."""
    from plotly.subplots import make_subplots

    grid = np.asarray(grid, dtype=float)
    methods = list(certified_by_method)
    n_cols = max(1, min(3, len(methods)))
    n_rows = max(1, -(-len(methods) // n_cols))
    fig = make_subplots(rows=n_rows, cols=n_cols, shared_yaxes=True, horizontal_spacing=0.04,
                        vertical_spacing=0.12, subplot_titles=[display_name(m) for m in methods])
    for i, m in enumerate(methods):
        row, col = i // n_cols + 1, i % n_cols + 1
        colour = method_colour(m)
        name = display_name(m)

        def add(y, label, **line):
            fig.add_trace(go.Scatter(x=grid, y=100 * y, mode="lines", name=f"{name}: {label}", legendgroup=m,
                                     line=dict(color=colour, shape="hv", **line)), row=row, col=col)

        add(robust_error_curve(certified_by_method[m], grid), "certified", width=2.5)
        if m in exact_by_method:
            res = exact_by_method[m]
            lo, hi = robust_error_interval(res.lower, res.upper, grid)
            n_unproven = int((~np.asarray(res.proven)).sum())
            if n_unproven:
                fig.add_trace(go.Scatter(x=grid, y=100 * hi, mode="lines", showlegend=False, legendgroup=m,
                                         line=dict(color=colour, width=1, dash="dot", shape="hv"), hoverinfo="skip"),
                              row=row, col=col)
                fig.add_trace(go.Scatter(x=grid, y=100 * lo, mode="lines", fill="tonexty",
                                         fillcolor=_rgba(colour, 0.35), legendgroup=m,
                                         name=f"{name}: exact ({n_unproven} unproven: band)",
                                         line=dict(color=colour, width=1, dash="dot", shape="hv")), row=row, col=col)
            else:
                add(lo, "exact", width=3.5, dash="dot")
        if attack_by_method and m in attack_by_method:
            add(robust_error_curve(attack_by_method[m], grid), "attack", width=2, dash="dash")
        fig.update_xaxes(title_text="l2 radius r", row=row, col=col)
    fig.update_yaxes(range=[0, 100])
    fig.update_yaxes(title_text="robust error (%)", col=1)
    fig.update_layout(title=title, template="plotly_white", legend_title="method: bound",
                      legend=dict(traceorder="grouped", orientation="h", y=-0.18),
                      height=max(420, 360 * n_rows), margin=dict(l=50, r=10, t=70, b=60), font=dict(size=14))
    return fig


def add_discs(fig: go.Figure, centres, radii, *, label: str, colour: str = "black", dash: str = "solid",
              width: float = 1.5, n: int = 64) -> go.Figure:
    """Add the l2 discs of ``radii`` around ``centres`` (2-D, non-finite or zero radii skipped)
    to ``fig`` as one legend entry ``label``; returns ``fig``."""
    t = np.linspace(0, 2 * np.pi, n)
    xs, ys = [], []
    for (cx, cy), r in zip(np.asarray(centres, dtype=float)[:, :2], np.asarray(radii, dtype=float)):
        if np.isfinite(r) and r > 0:
            xs += list(cx + r * np.cos(t)) + [None]
            ys += list(cy + r * np.sin(t)) + [None]
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=label, hoverinfo="skip",
                             line=dict(color=colour, width=width, dash=dash)))
    return fig
