"""The figure of the Paper reproduction page: robust error against the radius, from the
radii of ``results/`` (data in, plotly figure out; no Streamlit).

The curve of each method is :func:`arml_core.metric.robust_error_curve` on a fine grid that
contains the paper's grid, and a marker sits on every radius of the paper's grid: hovering
one gives the number of the table below the chart. The methods are drawn first-widest, each
with its own marker, so a method whose curve coincides with another's stays visible.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from .metric import robust_error_curve
from .plots import display_name, method_colour
from .plots_pairwise import FONT, SYMBOLS, layered_widths, legible


def display_grid(grid: Sequence[float], n: int = 201) -> np.ndarray:
    """``n`` evenly spaced radii from 0 to the largest of ``grid``, with ``grid`` itself."""
    grid = np.asarray(grid, dtype=float)
    top = max(float(grid.max(initial=0.0)), 1e-6)
    return np.unique(np.concatenate([np.linspace(0.0, top, n), grid]))


def reproduction_figure(radii_by_method: Mapping[str, np.ndarray], grid: Sequence[float], *,
                        kind: str = "certified", empirical_by_method: Mapping[str, np.ndarray] | None = None,
                        title: str = "") -> go.Figure:
    """Robust error (%) against the l2 radius: per method a solid step line (``kind``: its
    radii, 'exact' or 'certified'), dashed for ``empirical_by_method`` (an attack's norms),
    markers on the radii of ``grid``; y from 0 to 100. The solid lines are layered (first
    widest); the dashed ones are thin, so that they do not cover the solid ones."""
    grid = np.asarray(grid, dtype=float)
    fine = display_grid(grid)
    fig = go.Figure()
    widths = layered_widths(len(radii_by_method), thinnest=2.0, step=0.8)
    for n, (method, radii) in enumerate(radii_by_method.items()):
        color, name = method_colour(method), display_name(method)
        symbol = SYMBOLS[n % len(SYMBOLS)]
        series = [(kind, radii, "solid", widths[n])]
        if empirical_by_method and method in empirical_by_method:  # thin: it lies above its certified line
            series.append(("empirical", empirical_by_method[method], "dash", 2.0))
        for label, r, dash, width in series:
            fig.add_trace(go.Scatter(
                x=fine, y=100 * robust_error_curve(r, fine), mode="lines", name=f"{name} ({label})",
                line=dict(color=color, width=width, dash=dash, shape="hv"), legendgroup=f"{method}.{label}",
                hovertemplate="r = %{x:.3g}: %{y:.1f} %<extra>" + f"{name} ({label})" + "</extra>"))
            fig.add_trace(go.Scatter(
                x=grid, y=100 * robust_error_curve(r, grid), mode="markers", name=f"{name} ({label}) at the grid",
                showlegend=False, legendgroup=f"{method}.{label}",
                marker=dict(symbol=symbol, size=11, color=color if dash == "solid" else "white",
                            line=dict(width=2, color=color)),
                hovertemplate="r = %{x:g}: %{y:.1f} %<extra>" + f"{name} ({label})" + "</extra>"))
    fig.update_layout(title=title, xaxis_title="l2 radius r", yaxis_title="robust error (%)",
                      yaxis=dict(range=[0, 101]), xaxis=dict(tickvals=list(grid)), template="plotly_white",
                      font=FONT, height=500, legend=dict(orientation="h", y=-0.18, x=0),
                      margin=dict(l=60, r=20, t=50, b=40))
    return legible(fig)
