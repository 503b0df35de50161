"""Page 3: robust error against the radius, per method, in the paper's layout."""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from arml_core.evaluation import parse_grid, robust_error_table
from arml_core.evaluation.gap import exact_knn_plan, gap_summary, gap_table, robust_error_interval
from arml_core.metric import robust_error_curve
from arml_core.plots import display_name, robust_error_figure
from arml_core.plots_gap import gap_figure
from app_pages._shared import attack_norms, exact_knn, open_page, radii

page = open_page("Robustness curves", "curves")
sel, ds, K = page.sel, page.ds, page.K
recs = page.recs

default_grid = st.session_state.get("c_grid_text", "0,0.1,0.2,0.3,0.4,0.5")
text = st.text_input("Radius grid (comma-separated l2 radii)", default_grid, key="c_grid", bind="query-params")
try:
    grid = parse_grid(text)
    st.session_state["c_grid_text"] = text
except ValueError as exc:
    st.error(str(exc))
    st.stop()

c1, c2 = st.columns(2)
attack_method = c1.selectbox("Empirical attack (dashed)", ["none", "region", "boundary", "hopskipjump"],
                             index=1 if K > 1 else 0, key="c_attack", bind="query-params",
                             help="region: white-box QP attack; boundary / hopskipjump: black-box (foolbox), slow")
plan = exact_knn_plan(len(ds.y_train), len(ds.y_test), K)
want_exact = False
if plan.offered:
    want_exact = c2.checkbox("Exact K-NN radii (certified ≤ exact ≤ attack)", value=plan.default_on, key="c_exact", bind="query-params",
                             help=f"The exact minimal perturbation of {K}-NN, proven per point by a best-first "
                                  f"search over order-{K} Voronoi cells ({plan.reason}); a point that hits the "
                                  "limit keeps its proven interval.")
elif K > 1:
    c2.caption(f"Exact {K}-NN radii are not computed here: {plan.reason}.")
all_radii, kinds, empirical, exact = {}, {}, {}, {}
bar = st.progress(0.0, text="computing radii")
for i, (m, rec) in enumerate(recs.items()):
    all_radii[m], kinds[m] = radii(ds, sel, m, rec, K)
    if want_exact:
        bar.progress((i + 0.25) / len(recs), text=f"{display_name(m)}: exact {K}-NN radii (worst case "
                                                   f"{plan.worst_case_s:.0f} s)")
        exact[m] = exact_knn(ds, sel, m, rec, K, plan)
    if attack_method != "none":
        bar.progress((i + 0.5) / len(recs), text=f"{display_name(m)}: {attack_method} attack")
        try:
            empirical[m] = attack_norms(ds, sel, m, rec, K, attack_method)
        except (ValueError, RuntimeError) as exc:
            st.error(f"{display_name(m)}: the {attack_method} attack failed: {exc}")
    bar.progress((i + 1) / len(recs), text=f"{display_name(m)} done")
bar.empty()
if K == 1 and attack_method != "none":
    c2.caption("For 1-NN the radii are exact, so the attack curve coincides with the solid one.")

st.plotly_chart(robust_error_figure(all_radii, kind_by_method=kinds, empirical_by_method=empirical or None,
                                    grid=np.linspace(0, max(grid.max(), 1e-6), 201)), key="c_curve")
kind = "Exact" if K == 1 else "Certified"
table = robust_error_table(all_radii, grid, label=display_name).round(1)
st.subheader(f"{kind} robust error (%) of {K}-NN, {len(ds.X_test)} test points")
st.dataframe(table, key="c_table")
if empirical:
    st.subheader(f"Empirical robust error (%), {attack_method} attack")
    st.dataframe(robust_error_table(empirical, grid, label=display_name).round(1), key="c_table_emp")
if exact:
    st.subheader(f"Certified ≤ exact ≤ attack ({K}-NN, {len(ds.X_test)} test points)")
    st.plotly_chart(gap_figure(all_radii, exact, attack_by_method=empirical or None,
                               grid=np.linspace(0, max(grid.max(), 1e-6), 201),
                               title=f"{ds.name}, {K}-NN: certified (solid) ≤ exact (dotted) ≤ attack (dashed)"),
                    key="c_gap")
    st.dataframe(gap_table(all_radii, exact, empirical, grid, label=display_name), key="c_gap_table")
    lines = []
    for m, res in exact.items():
        s_ = gap_summary(all_radii[m], res, empirical.get(m))
        line = (f"**{display_name(m)}**: exact radius proven for {s_['proven']} of {s_['correct']} correctly "
                f"classified points")
        if s_["proven"]:
            line += (f"; on those, mean certified {s_['mean_certified']:.4f} ≤ exact {s_['mean_exact']:.4f}"
                     + (f" ≤ attack {s_['mean_attack']:.4f}" if "mean_attack" in s_ else "")
                     + f"; Theorem 1 is exact on {100 * s_['certified_is_exact']:.0f} %"
                     + (f", the attack on {100 * s_['attack_is_exact']:.0f} %" if "attack_is_exact" in s_ else ""))
        if s_["proven"] < s_["correct"]:
            line += " (the others hit the work limit: their interval is the shaded band)"
        lines.append(line + ".")
    st.markdown("\n".join(f"- {x}" for x in lines))
tidy = pd.DataFrame([{"dataset": ds.name, "method": m, "K": K, "kind": kind_, "radius": float(g),
                      "robust_error": float(robust_error_curve(r_, [g])[0])}
                     for m in recs
                     for kind_, r_ in [(kinds[m], all_radii[m])] + ([(f"empirical ({attack_method})", empirical[m])]
                                                                    if m in empirical else [])
                     for g in grid])
if exact:
    tidy = pd.concat([tidy, pd.DataFrame([
        {"dataset": ds.name, "method": m, "K": K, "kind": f"exact ({bound})", "radius": float(g),
         "robust_error": float(v)}
        for m, res in exact.items()
        for bound, curve in zip(("surely", "possibly"), robust_error_interval(res.lower, res.upper, grid))
        for g, v in zip(grid, curve)])], ignore_index=True)
st.download_button("Download CSV", tidy.to_csv(index=False), file_name=f"{ds.name}_K{K}_robust_error.csv",
                   mime="text/csv", key="c_csv")
