"""ARML Explorer: home page. Pick a data set and metric learners, train, compare robustness.

UI only: every number comes from ``arml_core`` and every figure from ``arml_core.plots``.
"""
from __future__ import annotations

import os
import time

import numpy as np
import pandas as pd
import streamlit as st

from arml_core import data
from arml_core._device import device_label
from arml_core.evaluate import fit_metric, radii_for, robust_error_curve
from arml_core.knn import MahalanobisKNN
from arml_core.learners import LEARNERS
from arml_core.plots import clean_error_figure, display_name, fine_grid, loss_curve_figure, robust_error_figure
from arml_core.runs import cached_metric, store_metric

RUNS_DIR = os.environ.get("ARML_RUNS_DIR", "runs")
DEFAULT_DATASET = "figure1"

st.set_page_config(page_title="ARML Explorer", page_icon="🛡️", layout="wide")


@st.cache_data(show_spinner="Loading the data set…")
def load(name: str, n_train: int | None, n_test: int | None, seed: int) -> data.Dataset:
    return data.load_dataset(name, n_train=n_train, n_test=n_test, seed=seed)


# -- sidebar: the selection -----------------------------------------------------------------
st.sidebar.title("ARML Explorer")
names = data.available_datasets()
dataset_name = st.sidebar.selectbox("Data set", names, index=names.index(DEFAULT_DATASET), key="dataset")
c1, c2 = st.sidebar.columns(2)
n_train = c1.number_input("Train points (0 = all)", min_value=0, value=0, step=100, key="n_train")
n_test = c2.number_input("Test points (0 = all)", min_value=0, value=200, step=100, key="n_test")
seed = st.sidebar.number_input("Seed", min_value=0, value=42, step=1, key="seed")
methods = st.sidebar.multiselect("Methods", list(LEARNERS), default=["euclidean", "arml"],
                                 format_func=display_name, key="methods")
K = st.sidebar.number_input("K (odd)", min_value=1, value=1, step=2, key="K")
st.sidebar.caption(f"Device: **{device_label('auto')}**")
with st.sidebar.expander("ARML settings"):
    arml_params = {
        "n_epochs": int(st.number_input("Epochs", 1, 5000, 300, step=50, key="arml_epochs")),
        "learning_rate": float(st.number_input("Learning rate", 1e-5, 1.0, 1e-2, format="%.4f", key="arml_lr")),
        "n_candidates": int(st.number_input("Candidates m", 1, 50, 10, key="arml_m")),
        "loss": st.selectbox("Loss", ["neg", "hinge", "exp", "logistic"], key="arml_loss"),
    }

st.title("Adversarially robust metric learning")
st.write(
    "Learn a Mahalanobis metric with each selected method, then measure how far a test point "
    "must move (in l2) before its K-NN prediction changes: **exact** for 1-NN, a **certified** "
    "lower bound for K > 1."
)
with st.expander("What am I looking at?"):
    st.latex(r"\epsilon^*(x) \;\ge\; \operatorname{kth\,min}_{n:\,y_n\ne y}\;"
             r"\operatorname{kth\,max}_{p:\,y_p=y}\;\frac{[d_M(x,n)-d_M(x,p)]_+}{2\,\lVert M(p-n)\rVert_2},"
             r"\qquad k=\tfrac{K+1}{2}")
    st.write(
        "Each curve shows the fraction of test points that an attacker could misclassify with a "
        "perturbation of l2 norm at most r. At r = 0 it is the ordinary (clean) error. A lower curve "
        "is a more robust classifier; ARML trains the metric to push these radii up."
    )

try:
    ds = load(dataset_name, n_train or None, n_test or None, int(seed))
    data.validate_for_k(ds, int(K))
except (ValueError, OSError) as exc:
    st.error(str(exc))
    st.stop()
st.caption(ds.description)
if not methods:
    st.info("Select at least one method in the sidebar.")
    st.stop()

results = st.session_state.setdefault("home_results", {})
sel_key = (ds.name, int(n_train), int(n_test), int(seed), int(K))


def settings_for(method: str) -> dict:
    base = {"n_train": int(n_train), "seed": int(seed)}
    return {**base, **(arml_params if method == "arml" else {})}


if st.button("Train and evaluate", type="primary", key="train"):
    for method in methods:
        settings = settings_for(method)
        with st.status(f"{display_name(method)}", expanded=False) as status:
            bar = st.progress(0.0, text="starting")
            try:
                hit = cached_metric(RUNS_DIR, ds.name, method, settings, ds.n_features)
                if hit is not None:
                    G, meta = hit
                    info, fit_time = meta.get("info", {}), float(meta.get("fit_time_s") or 0.0)
                    bar.progress(0.5, text="loaded a saved metric from runs/")
                else:
                    def progress(stage, frac, msg):
                        bar.progress(min(1.0, 0.8 * frac), text=msg)
                    params = {**arml_params, "random_state": int(seed)} if method == "arml" else {}
                    G, fit_time, info = fit_metric(ds, method, params=params, progress=progress)
                    store_metric(RUNS_DIR, ds.name, method, settings, G, fit_time, info)
                M = G.T @ G
                start = time.perf_counter()
                radii, kind = radii_for(ds, M, int(K), progress=lambda d, t: bar.progress(
                    0.8 + 0.2 * d / max(t, 1), text=f"radii {d}/{t}"))
                knn = MahalanobisKNN(M, n_neighbors=int(K)).fit(ds.X_train, ds.y_train)
                clean = float(np.mean(knn.predict(ds.X_test) != ds.y_test))
                results[sel_key + (method,)] = dict(radii=radii, kind=kind, clean=clean, fit_time=fit_time,
                                                    eval_time=time.perf_counter() - start, info=info)
                bar.progress(1.0, text="done")
                status.update(label=f"{display_name(method)}: clean error {100 * clean:.1f}%", state="complete")
            except (ValueError, RuntimeError, OSError) as exc:
                status.update(label=f"{display_name(method)} failed", state="error")
                st.error(f"{display_name(method)}: {exc}")

done = {m: results[sel_key + (m,)] for m in methods if sel_key + (m,) in results}
if not done:
    st.info("Press **Train and evaluate** to learn the selected metrics on this data set.")
    st.stop()

radii = {m: r["radii"] for m, r in done.items()}
kinds = {m: r["kind"] for m, r in done.items()}
left, right = st.columns([2, 1])
left.plotly_chart(robust_error_figure(radii, kind_by_method=kinds), key="curve")
right.plotly_chart(clean_error_figure({m: r["clean"] for m, r in done.items()}), key="clean")

grid = np.round(np.linspace(0, fine_grid(radii, 6)[-1], 6), 3)
table = pd.DataFrame({f"r={g:g}": [100 * robust_error_curve(radii[m], [g])[0] for m in done] for g in grid},
                     index=[display_name(m) for m in done]).round(1)
table.insert(0, "clean error (%)", [round(100 * done[m]["clean"], 1) for m in done])
table.insert(1, "fit time (s)", [round(done[m]["fit_time"], 2) for m in done])
st.subheader(f"{'Exact' if int(K) == 1 else 'Certified'} robust error (%)")
st.dataframe(table, key="table")
if "arml" in done and done["arml"]["info"].get("loss_curve"):
    st.plotly_chart(loss_curve_figure(done["arml"]["info"]["loss_curve"]), key="loss")
for m, r in done.items():
    for w in r["info"].get("warnings", []):
        st.warning(f"{display_name(m)}: {w}")
