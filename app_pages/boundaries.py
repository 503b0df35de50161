"""Page 2: K-NN decision regions under each metric (the ARML paper's Figure 1)."""
from __future__ import annotations

import numpy as np
import streamlit as st

from arml_core.metric import metric_from_components
from arml_core.robustness import minimal_perturbations
from arml_core.explore import decision_grid_2d, decision_grid_slice, slice_directions
from arml_core.plots import decision_boundary_figure, display_name, slice_figure
from app_pages._shared import knn_for, open_page, radii, training_view

page = open_page("Decision boundaries", "boundaries")
sel, ds, K = page.sel, page.ds, page.K
recs = page.recs
names = page.class_names

c1, c2 = st.columns(2)
resolution = int(c1.slider("Grid resolution", 50, 400, 160, step=10, key="b_res"))
show_discs = c2.checkbox("Show certified-radius discs", value=True, key="b_discs")

if ds.n_features == 2:
    X_all = np.vstack([ds.X_train, ds.X_test])
    cols = st.columns(min(3, len(recs)))
    for i, (m, rec) in enumerate(recs.items()):
        knn = knn_for(ds, rec, K)
        grid = decision_grid_2d(knn, X_all, resolution=resolution)
        r = radii(ds, sel, m, rec, K)[0] if show_discs else None
        view = training_view(ds, rec)
        removed = np.delete(ds.X_train, rec["kept"], axis=0) if "kept" in rec else None
        fig = decision_boundary_figure(grid, view.X_train, view.y_train, X_test=ds.X_test, y_test=ds.y_test,
                                       radii=r, class_names=names, title=f"{display_name(m)}, {K}-NN",
                                       removed=removed)
        cols[i % len(cols)].plotly_chart(fig, key=f"b_fig_{m}")
else:
    st.write(f"The data have {ds.n_features} features: the picture is a 2-D slice through one test point, "
             "spanned by its adversarial direction under the chosen metric and a second direction.")
    c1, c2, c3 = st.columns(3)
    idx = int(c1.number_input("Test point index", 0, len(ds.X_test) - 1, 0, key="b_idx"))
    method = c2.selectbox("Metric of the adversarial direction", list(recs), format_func=display_name, key="b_m")
    second = c3.selectbox("Second direction", ["random", "pca"] + [f"feature:{i}" for i in range(ds.n_features)],
                          key="b_second")
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
                             float(min(3.0, max(0.05, round(2.5 * norms[0], 2)))), key="b_extent"))
    cols = st.columns(min(3, len(recs)))
    for i, (m, rec_m) in enumerate(recs.items()):
        knn = knn_for(ds, rec_m, K)
        grid = decision_grid_slice(knn, ds.X_test[idx], u, v, extent=extent, resolution=min(resolution, 200))
        r = radii(ds, sel, m, rec_m, K)[0][idx] if show_discs else None
        fig = slice_figure(grid, label=int(ds.y_test[idx]), adv_norm=float(norms[0]) if m == method else None,
                           radius=r, class_names=names, title=f"{display_name(m)}, {K}-NN")
        cols[i % len(cols)].plotly_chart(fig, key=f"b_slice_{m}")
    st.caption(f"The adversarial direction is the exact minimal 1-NN perturbation under {display_name(method)} "
               f"(norm {norms[0]:.4f}).")
