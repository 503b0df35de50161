"""Page 6: the paper's evaluation as reproduced by ``python -m arml_core reproduce`` (read from results/)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from arml_core.evaluation import parse_grid, robust_error_table
from arml_core.plots import display_name, robust_error_figure
from arml_core.evaluation.summary import claims, load_results, results_datasets

ROOT = Path(__file__).resolve().parents[1]

st.title("Paper reproduction")
st.caption("The ARML paper's evaluation (six data sets, six methods) redone from the raw data by "
           "`make reproduce`. This page only reads its outputs; it trains nothing.")

results_dir = Path(os.environ.get("ARML_RESULTS_DIR") or ROOT / "results")


@st.cache_data(show_spinner=False)
def _load(dataset: str, folder: str, stamp: float):
    return load_results(dataset, folder)


names = results_datasets(results_dir)
if not names:
    st.info(f"No reproduction results in `{results_dir}`. Run `make reproduce` "
            "(or `python -m arml_core reproduce --datasets splice`) and reload this page.")
    st.stop()
name = st.selectbox("Data set", names, key="r_dataset")
try:
    res = _load(name, str(results_dir), (results_dir / name / "metrics_meta.json").stat().st_mtime)
except (OSError, ValueError) as exc:
    st.error(f"The results for {name} cannot be read: {exc}")
    st.stop()
meta = res.meta
K = int(meta.get("K", 11))

st.markdown(f"**{meta['n_train']}** training points (of {meta['n_train_full']}), **{meta['n_test']}** test points, "
            f"{meta['n_features']} features; K = {K}; profile `{meta['profile']}`; device: {meta['device']}.")
if meta.get("violations"):
    st.error("Soundness violations (bugs): " + "; ".join(meta["violations"]))
for f in meta.get("failures", []):
    st.error(f"Method failed: {f}")
for d in meta.get("deviations", []):
    st.warning(f"Deviation from the protocol: {d}")
with st.expander("What the paper claims, judged on these numbers", expanded=True):
    judged = claims(res)
    st.table(pd.DataFrame({"claim": list(judged), "here": list(judged.values())}).set_index("claim"))

paper_grid = ", ".join(f"{g:g}" for g in meta["grid"])
text = st.text_input("Radius grid (the paper's by default; a display choice)", paper_grid, key=f"r_grid_{name}")
try:
    grid = parse_grid(text)
except ValueError as exc:
    st.error(str(exc))
    st.stop()
fine = np.linspace(0, max(float(grid.max()), 1e-6), 201)


def _table(radii_by_method: dict) -> pd.DataFrame:
    return robust_error_table(radii_by_method, grid, label=display_name).round(1)


tab1, tabk = st.tabs(["1-NN (exact)", f"{K}-NN (certified and empirical)"])
with tab1:
    exact = res.per_point("nn1_exact")
    if not exact:
        st.info("The 1-NN stage has not been run for this data set.")
    else:
        st.plotly_chart(robust_error_figure(exact, grid=fine, kind_by_method={m: "exact" for m in exact},
                                            title=f"{name}: exact 1-NN robust error"), key="r_fig1")
        clean = pd.Series({display_name(m): 100 * v["clean_error"]["1"] for m, v in meta["methods"].items()
                           if m in exact}, name="clean").round(1)
        st.subheader(f"Exact robust error (%) of 1-NN, {meta['n_test']} test points")
        st.dataframe(pd.concat([clean, _table(exact)], axis=1), key="r_tab1")
        st.caption("Every exact perturbation was verified against the classifier, so for 1-NN the exact, "
                   "certified and empirical errors are one number.")
with tabk:
    cert, emp = res.per_point(f"knn{K}_certified"), res.per_point(f"knn{K}_empirical")
    if not cert:
        st.info(f"The {K}-NN stage has not been run for this data set.")
    else:
        n_att = int(meta.get("n_attack", meta["n_test"]))
        st.plotly_chart(robust_error_figure(cert, grid=fine, empirical_by_method=emp or None,
                                            title=f"{name}: {K}-NN certified (solid) and region attack (dashed)"),
                        key="r_figk")
        st.subheader(f"Certified robust error (%) of {K}-NN, {meta['n_test']} test points")
        st.dataframe(_table(cert), key="r_tabc")
        if emp:
            st.subheader(f"Empirical robust error (%), region attack, {n_att} test points")
            st.dataframe(_table(emp), key="r_tabe")
            if n_att < meta["n_test"]:
                st.caption(f"The attack ran on the first {n_att} test points; the certified error on those "
                           "same points, for comparison:")
                st.dataframe(_table({m: cert[m][:n_att] for m in emp}), key="r_tabcs")

st.subheader("Wall time per stage (s)")
stage = pd.DataFrame({display_name(m): v.get("stage_s", {}) for m, v in meta["methods"].items()}).T
st.dataframe(stage.round(1), key="r_times")
st.caption("A stage loaded from the cache shows the time it took when it was computed.")
