"""Page 2: K-NN decision regions under each metric (the ARML paper's Figure 1)."""
from __future__ import annotations

import numpy as np
import streamlit as st

from arml_core.metric import metric_from_components
from arml_core.robustness import minimal_perturbations
from arml_core.explore import decision_grid_2d, decision_grid_slice, slice_directions
from arml_core.plots import decision_boundary_figure, display_name, slice_figure
from arml_core.plots_gap import add_discs
from arml_core.evaluation.gap import exact_knn_plan
from app_pages._shared import exact_knn, knn_for, open_page, radii, training_view

page = open_page("Decision boundaries", "boundaries")
sel, ds, K = page.sel, page.ds, page.K
recs = page.recs
names = page.class_names

c1, c2 = st.columns(2)
resolution = int(c1.slider("Grid resolution", 50, 400, 160, step=10, key="b_res", bind="query-params"))
plan = exact_knn_plan(len(ds.y_train), len(ds.y_test), K)
disc_kinds = ["none", "exact"] if K == 1 else ["none", "certified"] + (["exact", "both"] if plan.offered else [])
disc_kind = c2.radio("Discs around correctly classified test points", disc_kinds, index=1, horizontal=True,
                     key="b_disc_kind", bind="query-params",
                     help="input-space l2 balls: certified = Theorem 1's lower bound; exact = the minimal "
                          "perturbation (for K > 1 proven per point by the exact K-NN search); both = the "
                          "certified disc (dotted) inside the exact one (solid): the gap between them is what "
                          "the certificate cannot see")
show_discs = disc_kind != "none"

if ds.n_features == 2:
    X_all = np.vstack([ds.X_train, ds.X_test])
    cols = st.columns(min(3, len(recs)))
    for i, (m, rec) in enumerate(recs.items()):
        knn = knn_for(ds, rec, K)
        grid = decision_grid_2d(knn, X_all, resolution=resolution)
        r = r_exact = None
        if disc_kind in ("exact", "both") and K > 1:
            res = exact_knn(ds, sel, m, rec, K, plan)
            r_exact = np.where(res.proven, res.upper, np.nan)  # unproven points get no exact disc
            if not res.proven.all():
                st.caption(f"{display_name(m)}: {int((~res.proven).sum())} point(s) hit the exact search's work "
                           "limit and are drawn without an exact disc.")
        if disc_kind in ("certified", "both") or (K == 1 and show_discs):
            r = radii(ds, sel, m, rec, K)[0]
        elif disc_kind == "exact":
            r, r_exact = r_exact, None
        view = training_view(ds, rec)
        removed = np.delete(ds.X_train, rec["kept"], axis=0) if "kept" in rec else None
        fig = decision_boundary_figure(grid, view.X_train, view.y_train, X_test=ds.X_test, y_test=ds.y_test,
                                       radii=r, class_names=names, title=f"{display_name(m)}, {K}-NN",
                                       removed=removed,
                                       radius_label="exact radius" if K == 1 or disc_kind == "exact"
                                       else "certified radius")
        if r_exact is not None:
            add_discs(fig, ds.X_test, r_exact, label="exact radius")
        cols[i % len(cols)].plotly_chart(fig, key=f"b_fig_{m}")
else:
    st.write(f"The data have {ds.n_features} features: the picture is a 2-D slice through one test point, "
             "spanned by its adversarial direction under the chosen metric and a second direction.")
    c1, c2, c3 = st.columns(3)
    idx = int(c1.number_input("Test point index", 0, len(ds.X_test) - 1, 0, key="b_idx", bind="query-params"))
    method = c2.selectbox("Metric of the adversarial direction", list(recs), format_func=display_name, key="b_m", bind="query-params")
    second = c3.selectbox("Second direction", ["random", "pca"] + [f"feature:{i}" for i in range(ds.n_features)],
                          key="b_second", bind="query-params")
    M = metric_from_components(recs[method]["G"])
    with st.spinner("exact minimal perturbation of this point (1-NN)…"):
        base = training_view(ds, recs[method])
        norms, deltas = minimal_perturbations(base.X_train, base.y_train, ds.X_test[idx:idx + 1],
                                              ds.y_test[idx:idx + 1], M)
    if norms[0] == 0:
        st.warning(f"Test point {idx} is already misclassified by 1-NN under {display_name(method)}: "
                   "there is no adversarial direction. Pick another point.")
        st.stop()
    try:
        u, v = slice_directions(ds.X_test[idx], deltas[0], second, X_train=ds.X_train, seed=int(sel["seed"]))
    except ValueError as exc:
        st.error(str(exc))
        st.stop()
    extent = float(st.slider("Half-width of the slice (l2 units)", 0.05, 3.0,
                             float(min(3.0, max(0.05, round(2.5 * norms[0], 2)))), key="b_extent", bind="query-params"))
    cols = st.columns(min(3, len(recs)))
    for i, (m, rec_m) in enumerate(recs.items()):
        knn = knn_for(ds, rec_m, K)
        grid = decision_grid_slice(knn, ds.X_test[idx], u, v, extent=extent, resolution=min(resolution, 200))
        r = None
        if disc_kind in ("exact", "both") and K > 1:
            res = exact_knn(ds, sel, m, rec_m, K, plan)
            r = float(res.upper[idx]) if res.proven[idx] else None
        elif show_discs:
            r = radii(ds, sel, m, rec_m, K)[0][idx]
        fig = slice_figure(grid, label=int(ds.y_test[idx]), adv_norm=float(norms[0]) if m == method else None,
                           radius=r, class_names=names, title=f"{display_name(m)}, {K}-NN")
        cols[i % len(cols)].plotly_chart(fig, key=f"b_slice_{m}")
    st.caption(f"The adversarial direction is the exact minimal 1-NN perturbation under {display_name(method)} "
               f"(norm {norms[0]:.4f}).")
