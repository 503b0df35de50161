"""Pure plotting functions: data in, plotly figure out (no Streamlit)."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from .evaluate import robust_error_curve

PALETTE = {
    "euclidean": "#636363", "nca": "#1f77b4", "lmnn": "#ff7f0e", "itml": "#2ca02c",
    "lfda": "#9467bd", "arml": "#d62728", "spectral": "#17becf",
}
DISPLAY = {"euclidean": "Euclidean", "nca": "NCA", "lmnn": "LMNN", "itml": "ITML",
           "lfda": "LFDA", "arml": "ARML", "spectral": "Spectral defence"}


def display_name(method: str) -> str:
    return DISPLAY.get(method, method)


def fine_grid(radii_by_method: Mapping[str, np.ndarray], n: int = 121) -> np.ndarray:
    """A grid from 0 to just past the largest finite radius of any method."""
    finite = [r[np.isfinite(r)] for r in radii_by_method.values()]
    top = max((float(f.max()) for f in finite if f.size), default=1.0)
    return np.linspace(0.0, max(top, 1e-6) * 1.05, n)


def robust_error_figure(radii_by_method: Mapping[str, np.ndarray], *, grid: Sequence[float] | None = None,
                        kind_by_method: Mapping[str, str] | None = None,
                        empirical_by_method: Mapping[str, np.ndarray] | None = None,
                        title: str = "Robust error against the perturbation radius") -> go.Figure:
    """Robust error (%) vs. l2 radius: one solid line per method (certified or exact),
    dashed for empirical (attack) radii when given."""
    grid = np.asarray(grid if grid is not None else fine_grid(radii_by_method), dtype=float)
    fig = go.Figure()
    for method, radii in radii_by_method.items():
        kind = (kind_by_method or {}).get(method, "certified")
        color = PALETTE.get(method)
        fig.add_trace(go.Scatter(
            x=grid, y=100 * robust_error_curve(radii, grid), mode="lines",
            name=f"{display_name(method)} ({kind})", line=dict(color=color, width=2.5, shape="hv"),
            legendgroup=method))
        if empirical_by_method and method in empirical_by_method:
            fig.add_trace(go.Scatter(
                x=grid, y=100 * robust_error_curve(empirical_by_method[method], grid), mode="lines",
                name=f"{display_name(method)} (empirical)",
                line=dict(color=color, width=2, dash="dash", shape="hv"), legendgroup=method))
    fig.update_layout(title=title, xaxis_title="l2 radius r", yaxis_title="robust error (%)",
                      yaxis=dict(range=[0, 100]), template="plotly_white", legend_title="method",
                      margin=dict(l=40, r=10, t=50, b=40))
    return fig


def loss_curve_figure(loss_curve: Sequence[float], *, title: str = "ARML training loss") -> go.Figure:
    y = np.asarray(loss_curve, dtype=float)
    fig = go.Figure(go.Scatter(x=np.arange(1, len(y) + 1), y=y, mode="lines", name="loss",
                               line=dict(color=PALETTE["arml"])))
    fig.update_layout(title=title, xaxis_title="epoch", yaxis_title="loss (mean over triplets)",
                      template="plotly_white", margin=dict(l=40, r=10, t=50, b=40))
    return fig


def clean_error_figure(errors: Mapping[str, float]) -> go.Figure:
    names = list(errors)
    fig = go.Figure(go.Bar(x=[display_name(m) for m in names], y=[100 * errors[m] for m in names],
                           marker_color=[PALETTE.get(m, "#888") for m in names],
                           text=[f"{100 * errors[m]:.1f}%" for m in names], textposition="outside"))
    fig.update_layout(title="Clean error", yaxis_title="error (%)", template="plotly_white",
                      margin=dict(l=40, r=10, t=50, b=40))
    return fig
