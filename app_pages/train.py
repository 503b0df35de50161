"""Page 1: train the selected methods and compare clean error, fit time and robustness."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
import streamlit as st

from arml_core.evaluation import clean_error
from arml_core.metric import metric_from_components
from arml_core.persistence import load_metric, metric_to_bytes
from arml_core.plots import clean_error_figure, display_name, loss_curve_figure, robust_error_figure
from app_pages import _training
from app_pages._shared import (ARML_DEFAULTS, UPLOAD_PREFIX, open_page, put_upload, radii, train, trained, training_view,
                               with_pruning)

page = open_page("Train & compare", "train", need_trained=False)
sel, ds, K = page.sel, page.ds, page.K
st.caption(ds.description)

with st.expander("ARML settings", expanded=False):
    p = st.session_state["arml_params"]
    c = st.columns(4)
    p["n_epochs"] = int(c[0].number_input("Epochs", 1, 5000, int(p["n_epochs"]), step=50, key="t_epochs", bind="query-params"))
    p["learning_rate"] = float(c[1].number_input("Learning rate", 1e-5, 1.0, float(p["learning_rate"]),
                                                 format="%.4f", key="t_lr", bind="query-params"))
    p["n_candidates"] = int(c[2].number_input("Candidates m", 1, 50, int(p["n_candidates"]), key="t_m", bind="query-params"))
    p["loss"] = c[3].selectbox("Loss", ["neg", "hinge", "exp", "logistic"],
                               index=["neg", "hinge", "exp", "logistic"].index(p["loss"]), key="t_loss", bind="query-params")
    st.checkbox("Show earlier runs with other settings beside the current one (e.g. \"ARML (1000 ep, lr 0.001, "
                "m 10, neg)\")", value=True, key="show_other_runs", bind="query-params")
    def _reset():
        st.session_state["arml_params"] = dict(ARML_DEFAULTS)
        for wkey, field in (("t_epochs", "n_epochs"), ("t_lr", "learning_rate"), ("t_m", "n_candidates"),
                            ("t_loss", "loss")):
            st.session_state[wkey] = ARML_DEFAULTS[field]

    st.button("Reset to defaults", key="t_reset", on_click=_reset)

with st.expander("Adversarial pruning (a data-side defence)", expanded=bool(sel.get("prune"))):
    st.write("Yang et al. (AISTATS 2020): remove the fewest training points so that no two points of different "
             "classes are closer than 2r (measured as twice the distance to their bisector under the metric), "
             "then run the usual K-NN on what is left. It composes with any metric: each method with r > 0 is "
             "shown a second time, pruned, on every page.")
    cols = st.columns(max(1, len(sel["methods"])))
    prune = {}
    for col, m in zip(cols, sel["methods"]):
        r = float(col.number_input(f"r for {display_name(m)} (0 = off)", 0.0, 10.0,
                                   float(sel.get("prune", {}).get(m, 0.0)), step=0.05, format="%.3f",
                                   key=f"t_prune_{m}", bind="query-params"))
        if r > 0:
            prune[m] = r
    sel["prune"] = prune

methods = sel["methods"]
if not methods and not trained(ds, sel):
    st.info("Select at least one method in the sidebar.")
    st.stop()
have = trained(ds, sel)
todo = [m for m in methods if m not in have]
_training.maybe_auto_train(ds, sel, todo)
c1, c2 = st.columns([1, 3])
label = _training.button_label(ds, sel, todo) if todo else "Retrain all"
if c1.button(label, type="primary", key="t_train", disabled=_training.running()):
    retrain = todo or [m for m in methods if m != "euclidean"]
    if not todo:  # retrain: forget the session's copies so the new fits replace them
        from app_pages._shared import metric_key

        for m in retrain:
            st.session_state["metrics"].pop(metric_key(ds, sel, m), None)
    train(ds, sel, retrain)
    have = trained(ds, sel)
_training.follow()  # a run in progress, or what failed / was stopped in the last one
if not have:
    c2.info("Nothing trained yet for this selection: press the button.")
    st.stop()

have = with_pruning(ds, sel, have, K)
rows, curves, kinds, cleans = [], {}, {}, {}
for m, rec in have.items():
    r, kind = radii(ds, sel, m, rec, K)
    cleans[m] = clean_error(training_view(ds, rec), metric_from_components(rec["G"]), K)
    curves[m], kinds[m] = r, kind
    rows.append({"method": display_name(m), "clean error (%)": round(100 * cleans[m], 1),
                 "median radius": float(np.median(r)), "training points": len(training_view(ds, rec).y_train),
                 "fit time (s)": round(rec["fit_time"], 2), "source": rec["source"]})
st.dataframe(pd.DataFrame(rows).set_index("method"), key="t_table")
left, right = st.columns([2, 1])
left.plotly_chart(robust_error_figure(curves, kind_by_method=kinds), key="t_curve")
right.plotly_chart(clean_error_figure(cleans), key="t_clean")
if "arml" in have and have["arml"]["info"].get("loss_curve"):
    st.plotly_chart(loss_curve_figure(have["arml"]["info"]["loss_curve"]), key="t_loss_curve")
for m, rec in have.items():
    for w in rec["info"].get("warnings", []):
        st.warning(f"{display_name(m)}: {w}")
    if rec["info"].get("converged") is False:
        st.warning(f"{display_name(m)}: {rec['info'].get('stop_reason')}")

st.subheader("Save or load a metric")
c1, c2 = st.columns(2)
pick = c1.selectbox("Metric to download", [m for m in have if "kept" not in have[m]], format_func=display_name,
                    key="t_dl_pick")
c1.download_button("Download .npz", metric_to_bytes(have[pick]["G"], {"dataset": ds.name, "method": pick}),
                   file_name=f"{ds.name}_{pick.replace(UPLOAD_PREFIX, 'upload_')}.npz", mime="application/octet-stream", key="t_dl")
if msg := st.session_state.pop("t_loaded_msg", None):
    c2.success(msg)
up = c2.file_uploader("Upload a metric (.npz)", type=["npz"], key="t_upload",
                      help="It stays in this session, is labelled as an upload on every page and is never "
                           "saved on the server.")
if up is not None and c2.button("Load metric", key="t_load"):
    try:
        buf = io.BytesIO(up.getvalue())
        buf.name = up.name
        G, meta = load_metric(buf, n_features=ds.n_features)
        key = put_upload(ds, up.name, G)
        st.session_state["t_loaded_msg"] = (f"Loaded {up.name} ({G.shape[0]}x{G.shape[1]}) as "
                                             f"{display_name(key)}, for this session only.")
        st.rerun()
    except ValueError as exc:
        st.error(str(exc))
