"""Page 4: one test point, its minimal adversarial perturbation, and its neighbours."""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from arml_core.evaluation.gap import exact_knn_one, exact_knn_plan
from arml_core.explore import adversarial_example, neighbours
from arml_core.metric import metric_from_components
from arml_core.plots import display_name, feature_bar_figure, image_triplet_figure
from app_pages._shared import knn_for, open_page, radii, training_view

page = open_page("Adversarial examples", "examples")
sel, ds, K = page.sel, page.ds, page.K
recs = page.recs
names = page.class_names

method = st.selectbox("Metric", list(recs), format_func=display_name, key="e_method", bind="query-params")
rec = recs[method]
M = metric_from_components(rec["G"])
r, kind = radii(ds, sel, method, rec, K)
knn = knn_for(ds, rec, K)
pred = knn.predict_encoded(ds.X_test)

order = np.argsort(r, kind="stable")
overview = pd.DataFrame({"test index": order, "true": [names[ds.y_test[i]] for i in order],
                         "predicted": [names[pred[i]] for i in order], f"{kind} radius": r[order]})
c1, c2 = st.columns([3, 2])
c1.dataframe(overview, height=240, key="e_overview", hide_index=True)
how = c2.radio("Choose the point", ["by index", "smallest positive radius", "largest radius"], key="e_how", bind="query-params")
if how == "by index":
    idx = int(c2.number_input("Test point index", 0, len(ds.X_test) - 1, 0, key="e_idx", bind="query-params"))
elif how == "smallest positive radius":
    pos = order[r[order] > 0]
    idx = int(pos[0]) if len(pos) else int(order[0])
else:
    idx = int(order[-1])

x, y = ds.X_test[idx], int(ds.y_test[idx])
c = st.columns(5 if K > 1 else 4)
c[0].metric("True label", names[y])
c[1].metric(f"{K}-NN prediction", names[pred[idx]])
c[2].metric("Certified (Theorem 1)" if K > 1 else "Exact radius", f"{r[idx]:.4f}",
            help="a lower bound on the exact radius" if K > 1 else "the minimal l2 perturbation that flips 1-NN")

if pred[idx] != y:
    st.warning(f"Test point {idx} is already misclassified under {display_name(method)}: its radius is 0.")
    st.stop()

box = st.checkbox("Keep the adversarial point inside [0, 1]^D", value=False, key="e_box", bind="query-params")
bounds = (0.0, 1.0) if box else None
view = training_view(ds, rec)
with st.spinner("solving the exact minimal perturbation…" if K == 1 else "region attack (white-box) on this point…"):
    try:
        adv = adversarial_example(view.X_train, view.y_train, x, y, M, K, box=bounds)
    except ValueError as exc:
        st.error(str(exc))
        st.stop()
norm, x_adv, how = adv.norm, adv.x_adv, adv.how
if K > 1:
    plan = exact_knn_plan(len(view.y_train), 1, K)
    ex = None
    if plan.offered:
        with st.spinner(f"exact {K}-NN radius of this point (best-first over order-{K} cells)…"):
            ex = exact_knn_one(view.X_train, view.y_train, x, y, M, K, box=bounds)
        if ex.proven[0]:
            c[3].metric("Exact (proven)", f"{ex.upper[0]:.4f}",
                        help="the minimal l2 perturbation that changes the K-NN vote, proven by a best-first "
                             f"search over order-{K} Voronoi cells")
        else:
            c[3].metric("Exact (interval)", f"{ex.lower[0]:.4f} – {ex.upper[0]:.4f}",
                        help=f"the search hit its work limit ({ex.info['limit_hit'].get(0, 'limit')}): "
                             "the radius lies in this proven interval")
    else:
        c[3].metric("Exact", "not computed", help=plan.reason)
    c[4].metric("Attack (region)", f"{norm:.4f}", help="an upper bound on the exact radius")
    if ex is not None and ex.proven[0] and np.isfinite(ex.upper[0]):
        shown = st.radio("Perturbation shown below", ["exact (minimal)", "region attack"], horizontal=True,
                         key="e_which", bind="query-params")
        if shown.startswith("exact"):
            norm, x_adv, how = float(ex.upper[0]), x + ex.deltas[0], "exact"
else:
    c[3].metric("Perturbation (exact)", f"{norm:.4f}")
after = neighbours(knn, x_adv)
flipped = after.prediction != y
(st.success if flipped else st.error)(
    f"x + δ ({how}) is classified as **{names[after.prediction]}** (true {names[y]}): the prediction "
    f"{'flips' if flipped else 'does NOT flip'}; ||δ|| = {norm:.4f}, {kind} radius {r[idx]:.4f}.")

if ds.image_shape is not None:
    st.plotly_chart(image_triplet_figure(x, x_adv, ds.image_shape), key="e_images")
else:
    st.plotly_chart(feature_bar_figure(x, x_adv, feature_names=ds.feature_names), key="e_bars")

before = neighbours(knn, x)
c1, c2 = st.columns(2)
for col, title, nb in ((c1, "Neighbours of x", before), (c2, "Neighbours of x + δ", after)):
    col.markdown(f"**{title}** (vote: {names[nb.prediction]})")
    col.dataframe(pd.DataFrame({"train index": nb.indices, "label": [names[l] for l in nb.labels],
                                "distance": nb.distances}), hide_index=True, key=f"e_nb_{title}")
