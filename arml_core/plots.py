"""Pure plotting functions: data in, plotly figure out (no Streamlit)."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from .learners.registry import PALETTE
from .learners.registry import display_name as learner_name
from .metric import robust_error_curve

PRUNED = "+prune@"  # a method key with a pruning radius: "arml+prune@0.1"


def pruned_key(method: str, r: float) -> str:
    """The key of ``method`` with adversarial pruning at radius ``r`` (a data-side defence)."""
    return f"{method}{PRUNED}{float(r):g}"


def display_name(method: str) -> str:
    """The display name of a method key (a learner, its pruned variant, or a file name)."""
    base, sep, r = method.partition(PRUNED)
    return f"{learner_name(base)} + pruning (r = {r})" if sep else learner_name(method)


def method_colour(method: str, default: str = "#888888") -> str:
    """One colour per method on every page; a pruned variant gets a darker shade of it."""
    base, sep, _ = method.partition(PRUNED)
    colour = PALETTE.get(base, default)
    if not sep:
        return colour
    rgb = [int(colour[i:i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{int(0.55 * v):02x}" for v in rgb)


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
        color = method_colour(method)
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
                           marker_color=[method_colour(m) for m in names],
                           text=[f"{100 * errors[m]:.1f}%" for m in names], textposition="outside"))
    fig.update_layout(title="Clean error", yaxis_title="error (%)", template="plotly_white",
                      margin=dict(l=40, r=10, t=50, b=40))
    return fig


# -- decision regions ---------------------------------------------------------------------
CLASS_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
                "#7f7f7f", "#bcbd22", "#17becf"]
MARKERS = ["triangle-up", "square", "circle", "diamond", "cross", "x", "star", "hexagon",
           "pentagon", "triangle-down"]


def _class_color(c: int) -> str:
    return CLASS_COLORS[c % len(CLASS_COLORS)]


def _light(hex_color: str, alpha: float = 0.22) -> str:
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def _region_trace(grid, n_classes: int) -> go.Heatmap:
    scale = []
    for c in range(n_classes):
        lo, hi = c / n_classes, (c + 1) / n_classes
        scale += [[lo, _light(_class_color(c))], [hi, _light(_class_color(c))]]
    return go.Heatmap(x=grid.xs, y=grid.ys, z=grid.labels, zmin=-0.5, zmax=n_classes - 0.5,
                      colorscale=scale, showscale=False, hoverinfo="skip", name="regions")


def _circle(cx, cy, r, n=64):
    t = np.linspace(0, 2 * np.pi, n)
    return cx + r * np.cos(t), cy + r * np.sin(t)


def decision_boundary_figure(grid, X_train, y_train, *, X_test=None, y_test=None, radii=None,
                             class_names: Sequence[str] | None = None, title: str = "",
                             removed=None, radius_label: str = "certified radius") -> go.Figure:
    """K-NN decision regions on a 2-D grid, training points per class (triangles,
    squares, ...), test points as open circles and, when ``radii`` is given, the disc of
    that radius (``radius_label``: certified, exact) around each correctly classified test
    point; ``removed``: training points adversarial pruning removed (grey crosses)."""
    y_train = np.asarray(y_train)
    n_classes = int(max(y_train.max(), grid.labels.max(), -1 if y_test is None else np.max(y_test))) + 1
    names = list(class_names) if class_names is not None else [str(c) for c in range(n_classes)]
    fig = go.Figure(_region_trace(grid, n_classes))
    for c in range(n_classes):
        sel = y_train == c
        fig.add_trace(go.Scatter(x=X_train[sel, 0], y=X_train[sel, 1], mode="markers", name=f"train {names[c]}",
                                 marker=dict(symbol=MARKERS[c % len(MARKERS)], size=9, color=_class_color(c),
                                             line=dict(width=1, color="black"))))
    if removed is not None and len(removed):
        removed = np.asarray(removed, dtype=float)
        fig.add_trace(go.Scatter(x=removed[:, 0], y=removed[:, 1], mode="markers", name="removed by pruning",
                                 marker=dict(symbol="x-thin", size=12, color="#111111", line=dict(width=3))))
    if X_test is not None:
        for c in range(n_classes):
            sel = np.asarray(y_test) == c
            if sel.any():
                fig.add_trace(go.Scatter(x=X_test[sel, 0], y=X_test[sel, 1], mode="markers", name=f"test {names[c]}",
                                         marker=dict(symbol="circle-open", size=10, color=_class_color(c),
                                                     line=dict(width=2))))
        if radii is not None:
            xs, ys = [], []
            for (cx, cy), r in zip(np.asarray(X_test)[:, :2], np.asarray(radii)):
                if np.isfinite(r) and r > 0:
                    px, py = _circle(cx, cy, r)
                    xs += list(px) + [None]
                    ys += list(py) + [None]
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=radius_label,
                                     line=dict(color="black", width=1, dash="dot"), hoverinfo="skip"))
    fig.update_layout(title=title, template="plotly_white", margin=dict(l=30, r=10, t=40, b=30),
                      xaxis=dict(range=[grid.xs[0], grid.xs[-1]], constrain="domain"),
                      yaxis=dict(range=[grid.ys[0], grid.ys[-1]], scaleanchor="x", scaleratio=1),
                      legend=dict(orientation="h", y=-0.12))
    return fig


def slice_figure(grid, *, label: int, adv_norm: float | None = None, radius: float | None = None,
                 class_names: Sequence[str] | None = None, title: str = "") -> go.Figure:
    """Decision regions on the plane ``x + a u + b v`` (u = adversarial direction), the
    test point at the origin, its adversarial point at ``(adv_norm, 0)`` and the
    certified disc."""
    n_classes = int(max(grid.labels.max(), label)) + 1
    names = list(class_names) if class_names is not None else [str(c) for c in range(n_classes)]
    fig = go.Figure(_region_trace(grid, n_classes))
    # a legend entry per class present in the slice
    for c in np.unique(grid.labels):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=f"region {names[c]}",
                                 marker=dict(symbol="square", size=12, color=_light(_class_color(int(c)), 0.6))))
    fig.add_trace(go.Scatter(x=[0], y=[0], mode="markers", name=f"test point (label {names[label]})",
                             marker=dict(size=13, color=_class_color(label), symbol="circle",
                                         line=dict(width=2, color="black"))))
    if adv_norm is not None and np.isfinite(adv_norm):
        fig.add_trace(go.Scatter(x=[adv_norm], y=[0], mode="markers", name="adversarial point",
                                 marker=dict(size=14, color="black", symbol="x")))
    if radius is not None and radius > 0:
        px, py = _circle(0.0, 0.0, radius)
        fig.add_trace(go.Scatter(x=px, y=py, mode="lines", name="certified radius",
                                 line=dict(color="black", dash="dot")))
    fig.update_layout(title=title, template="plotly_white", margin=dict(l=30, r=10, t=40, b=30),
                      xaxis_title="along the adversarial direction", yaxis_title="second direction",
                      yaxis=dict(scaleanchor="x", scaleratio=1), legend=dict(orientation="h", y=-0.15))
    return fig


# -- single examples ------------------------------------------------------------------------
def image_triplet_figure(x, x_adv, image_shape, *, titles=("original", "adversarial", "perturbation")) -> go.Figure:
    """Original, adversarial and perturbation images side by side (grayscale)."""
    from plotly.subplots import make_subplots

    x, x_adv = np.asarray(x, float), np.asarray(x_adv, float)
    h, w = image_shape
    fig = make_subplots(rows=1, cols=3, subplot_titles=list(titles), horizontal_spacing=0.04)
    lo, hi = min(x.min(), x_adv.min()), max(x.max(), x_adv.max())
    for col, img in ((1, x), (2, x_adv)):
        fig.add_trace(go.Heatmap(z=img.reshape(h, w)[::-1], colorscale="gray_r", zmin=lo, zmax=hi,
                                 showscale=False), row=1, col=col)
    delta = (x_adv - x).reshape(h, w)[::-1]
    m = max(float(np.abs(delta).max()), 1e-12)
    fig.add_trace(go.Heatmap(z=delta, colorscale="RdBu", zmin=-m, zmax=m, showscale=True,
                             colorbar=dict(len=0.8, thickness=10)), row=1, col=3)
    for c in (1, 2, 3):
        fig.update_xaxes(showticklabels=False, row=1, col=c)
        fig.update_yaxes(showticklabels=False, scaleanchor=f"x{'' if c == 1 else c}", row=1, col=c)
    fig.update_layout(template="plotly_white", margin=dict(l=10, r=10, t=40, b=10), height=320)
    return fig


def feature_bar_figure(x, x_adv, *, feature_names: Sequence[str] | None = None) -> go.Figure:
    """Per-feature values of the original and perturbed point, and the perturbation."""
    x, x_adv = np.asarray(x, float), np.asarray(x_adv, float)
    names = list(feature_names) if feature_names is not None else [f"x{i + 1}" for i in range(x.size)]
    fig = go.Figure([
        go.Bar(x=names, y=x, name="original", marker_color="#1f77b4"),
        go.Bar(x=names, y=x_adv, name="adversarial", marker_color="#d62728"),
        go.Scatter(x=names, y=x_adv - x, name="perturbation", mode="markers+lines",
                   marker=dict(color="black"), yaxis="y2"),
    ])
    fig.update_layout(barmode="group", template="plotly_white", margin=dict(l=40, r=40, t=30, b=40),
                      yaxis=dict(title="feature value"),
                      yaxis2=dict(title="perturbation", overlaying="y", side="right", zeroline=True),
                      legend=dict(orientation="h", y=-0.2))
    return fig


# -- pairwise attacks -------------------------------------------------------------------------
def pair_success_figure(eps_grid, rates_by_method: Mapping[str, np.ndarray], *,
                        certified_by_method: Mapping[str, np.ndarray] | None = None,
                        title: str = "Pairwise attack") -> go.Figure:
    """Attack success rate (solid) and the fraction of pairs not certified (dashed)
    against the l_inf budget eps, per metric."""
    fig = go.Figure()
    eps_grid = np.asarray(eps_grid, dtype=float)
    for method, rate in rates_by_method.items():
        color = method_colour(method)
        fig.add_trace(go.Scatter(x=eps_grid, y=100 * np.asarray(rate), mode="lines+markers",
                                 name=f"{display_name(method)} (attack)", line=dict(color=color, width=2.5),
                                 legendgroup=method))
        if certified_by_method and method in certified_by_method:
            fig.add_trace(go.Scatter(x=eps_grid, y=100 * np.asarray(certified_by_method[method]), mode="lines",
                                     name=f"{display_name(method)} (not certified)",
                                     line=dict(color=color, width=2, dash="dash"), legendgroup=method))
    fig.update_layout(title=title, xaxis_title="budget eps (||delta_i||_inf + ||delta_j||_inf)",
                      yaxis_title="pairs (%)", yaxis=dict(range=[0, 100]), template="plotly_white",
                      margin=dict(l=40, r=10, t=50, b=40))
    return fig


def pair_distance_figure(dist_before: float, dist_after: float, gamma: float, *, published: float,
                         rigorous: float) -> go.Figure:
    """One pair: squared distance before and after the attack against gamma and both bounds."""
    names = ["before", "after attack", "published bound", "rigorous bound"]
    vals = [dist_before, dist_after, published, rigorous]
    fig = go.Figure(go.Bar(x=names, y=vals, marker_color=["#1f77b4", "#d62728", "#ff7f0e", "#2ca02c"],
                           text=[f"{v:.4g}" for v in vals], textposition="outside"))
    fig.add_hline(y=gamma, line_dash="dash", annotation_text=f"gamma = {gamma:.4g}")
    fig.update_layout(yaxis_title="squared distance D", template="plotly_white", height=320,
                      margin=dict(l=40, r=10, t=30, b=40))
    return fig
