"""The figures of the Pairwise attacks page: data in, plotly figure out (no Streamlit).

Plotly annotations and titles render HTML (``δ<sub>j</sub>``), not LaTeX, so every label
here is plain Unicode with ``<sub>``. Lines that may coincide (two metrics with the same
success rate) are drawn first-widest, each with its own marker, so none hides another.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from .plots import display_name, method_colour

FONT = dict(size=15)  # legible at 1280x720 (the chart is then about 900 px wide)
SYMBOLS = ("circle", "square", "diamond", "triangle-up", "x", "star", "hexagon", "cross")
BUDGET = "budget ε = ‖δ<sub>i</sub>‖<sub>∞</sub> + ‖δ<sub>j</sub>‖<sub>∞</sub>"


def legible(fig: go.Figure) -> go.Figure:
    """Explicit font sizes on the title, axes and legend (Streamlit's chart theme otherwise
    sets small tick labels), legible on a 1280x720 screen."""
    fig.update_layout(font=FONT, title_font_size=18, legend_font_size=14)
    fig.update_xaxes(title_font_size=16, tickfont_size=14)
    fig.update_yaxes(title_font_size=16, tickfont_size=14)
    return fig


def layered_widths(n: int, *, thinnest: float = 2.0, step: float = 1.5) -> list[float]:
    """Line widths for ``n`` traces drawn in order, the first the widest: where two lines
    coincide the later, thinner one lies inside the earlier and both stay visible."""
    return [thinnest + step * (n - 1 - i) for i in range(n)]


def pair_success_figure(eps_grid, rates_by_method: Mapping[str, np.ndarray], *,
                        certified_by_method: Mapping[str, np.ndarray] | None = None,
                        title: str = "Pairwise attack") -> go.Figure:
    """Attack success rate (solid, one marker per metric) and the fraction of pairs not
    certified (dotted) against the l∞ budget ε, per metric; y from 0 to 100 %."""
    fig = go.Figure()
    eps_grid = np.asarray(eps_grid, dtype=float)
    widths = layered_widths(len(rates_by_method))
    for n, (method, rate) in enumerate(rates_by_method.items()):
        color, name = method_colour(method), display_name(method)
        fig.add_trace(go.Scatter(
            x=eps_grid, y=100 * np.asarray(rate), mode="lines+markers", name=f"{name} (attack)",
            line=dict(color=color, width=widths[n]),
            marker=dict(symbol=SYMBOLS[n % len(SYMBOLS)], size=8 + 2 * widths[n], color=color,
                        line=dict(width=1.5, color="white")),
            legendgroup=method, hovertemplate="ε = %{x:g}: %{y:.1f} % broken<extra>" + name + "</extra>"))
        if certified_by_method and method in certified_by_method:
            fig.add_trace(go.Scatter(
                x=eps_grid, y=100 * np.asarray(certified_by_method[method]), mode="lines",
                name=f"{name} (not certified)", line=dict(color=color, width=widths[n], dash="dot"),
                legendgroup=method, hovertemplate="ε = %{x:g}: %{y:.1f} % not certified<extra>" + name + "</extra>"))
    fig.update_layout(title=title, xaxis_title=BUDGET, yaxis_title="pairs (%)",
                      yaxis=dict(range=[0, 102]), template="plotly_white", font=FONT, height=460,
                      legend=dict(orientation="h", y=-0.22, x=0), margin=dict(l=60, r=20, t=50, b=40))
    return legible(fig)


def pair_distance_figure(dist_before: float, dist_after: float, gamma: float, *, published: float,
                         rigorous: float, eps: float | None = None) -> go.Figure:
    """One pair: squared distance before and after the attack, both bounds on it and the
    threshold γ (a dashed line, named in the legend). Bars start at 0."""
    budget = "" if eps is None else f" (ε = {eps:g})"
    names = ["before", f"after the attack{budget}", "published bound", "rigorous bound"]
    vals = [dist_before, dist_after, published, rigorous]
    top = max(max(vals), gamma)
    fig = go.Figure(go.Bar(x=names, y=vals, marker_color=["#1f77b4", "#d62728", "#ff7f0e", "#2ca02c"],
                           text=[f"{v:.4g}" for v in vals], textposition="outside", cliponaxis=False,
                           hovertemplate="%{x}: D = %{y:.4g}<extra></extra>"))
    fig.add_hline(y=gamma, line=dict(color="black", dash="dash", width=2))
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=f"threshold γ = {gamma:.4g} (similar at or below)",
                             line=dict(color="black", dash="dash", width=2)))  # the line's legend entry
    fig.update_traces(selector=dict(type="bar"), showlegend=False)
    fig.update_layout(yaxis=dict(title="squared distance D", range=[0, 1.18 * top], rangemode="tozero"),
                      legend=dict(orientation="h", y=1.02, yanchor="bottom", x=0),
                      template="plotly_white", height=380, font=FONT, margin=dict(l=60, r=20, t=40, b=40))
    return legible(fig)


def pair_images_figure(x_i, x_j, x_i_adv, x_j_adv, image_shape: Sequence[int]) -> go.Figure:
    """Both points of a pair, attacked, and their perturbations δ<sub>i</sub>, δ<sub>j</sub>
    on one colour scale (symmetric about 0), so a zero perturbation shows as white and says so."""
    from plotly.subplots import make_subplots

    h, w = image_shape
    pts = [np.asarray(v, float) for v in (x_i, x_i_adv, x_j, x_j_adv)]
    d_i, d_j = pts[1] - pts[0], pts[3] - pts[2]
    m = max(float(np.abs(d_i).max()), float(np.abs(d_j).max()), 1e-12)
    titles = ["x<sub>i</sub>", "x<sub>i</sub> attacked", f"δ<sub>i</sub> (‖δ<sub>i</sub>‖<sub>∞</sub> = {np.abs(d_i).max():.3g})",
              "x<sub>j</sub>", "x<sub>j</sub> attacked", f"δ<sub>j</sub> (‖δ<sub>j</sub>‖<sub>∞</sub> = {np.abs(d_j).max():.3g})"]
    fig = make_subplots(rows=2, cols=3, subplot_titles=titles, horizontal_spacing=0.04, vertical_spacing=0.1)
    lo, hi = min(p.min() for p in pts), max(p.max() for p in pts)
    for row, (x, x_adv, d) in enumerate(((pts[0], pts[1], d_i), (pts[2], pts[3], d_j)), start=1):
        for col, img in ((1, x), (2, x_adv)):
            fig.add_trace(go.Heatmap(z=img.reshape(h, w)[::-1], colorscale="gray_r", zmin=lo, zmax=hi,
                                     showscale=False, hovertemplate="%{z:.3g}<extra></extra>"), row=row, col=col)
        fig.add_trace(go.Heatmap(z=d.reshape(h, w)[::-1], colorscale="RdBu", zmin=-m, zmax=m, showscale=row == 1,
                                 colorbar=dict(title="δ", len=0.9, thickness=12),
                                 hovertemplate="δ = %{z:.3g}<extra></extra>"), row=row, col=3)
        if not np.any(d):
            fig.add_annotation(text="0 everywhere:<br>the budget went<br>to the other point", showarrow=False,
                               xref=f"x{3 * row} domain", yref=f"y{3 * row} domain", x=0.5, y=0.5,
                               font=dict(size=14), bgcolor="rgba(255,255,255,0.85)")
    for k in range(1, 7):
        axis = "" if k == 1 else str(k)
        fig.update_layout(**{f"xaxis{axis}": dict(showticklabels=False, showgrid=False, zeroline=False),
                             f"yaxis{axis}": dict(showticklabels=False, showgrid=False, zeroline=False,
                                                  scaleanchor=f"x{axis}")})
    fig.update_annotations(font_size=15)
    fig.update_layout(template="plotly_white", height=560, font=FONT, margin=dict(l=10, r=10, t=40, b=10))
    return legible(fig)
