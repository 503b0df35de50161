"""Page 6: the paper's evaluation as reproduced by ``python -m arml_core reproduce`` (read from results/)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from arml_core.evaluation import parse_grid, robust_error_table
from arml_core.evaluation.summary import claims, load_results, results_datasets
from arml_core.plots import display_name
from arml_core.plots_reproduction import reproduction_figure

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


def _table(radii_by_method: dict) -> pd.DataFrame:
    """The robust error (%) at the grid, counted as results/ counts it (radius <= r)."""
    return robust_error_table(radii_by_method, grid, label=display_name).round(1)


def _clean(k: int, methods) -> pd.Series:
    return pd.Series({display_name(m): 100 * v["clean_error"][str(k)] for m, v in meta["methods"].items()
                      if m in methods and "clean_error" in v}, name=f"clean {k}-NN").round(1)


def _nth(k: int) -> str:
    return f"{k}{'th' if 10 <= k % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(k % 10, 'th')}"


def _listing(counts: dict) -> str:
    return ", ".join(f"{display_name(m)} {c}" for m, c in counts.items())


n_test = int(meta["n_test"])


tab1, tabk = st.tabs(["1-NN (exact)", f"{K}-NN (certified and empirical)"])
with tab1:
    exact = res.per_point("nn1_exact")
    if not exact:
        st.info("The 1-NN stage has not been run for this data set.")
    else:
        st.plotly_chart(reproduction_figure(exact, grid, kind="exact",
                                            title=f"{name}: exact 1-NN robust error, {n_test} test points"),
                        key="r_fig1")
        st.subheader(f"Exact robust error (%) of 1-NN, {n_test} test points")
        st.dataframe(pd.concat([_clean(1, exact), _table(exact)], axis=1), key="r_tab1")
        st.caption("Every exact perturbation was verified against the classifier, so for 1-NN the exact, "
                   "certified and empirical errors are one number.")
        ties = {m: c for m, c in res.correct_at_radius_zero("nn1_exact").items() if c > 0}
        if ties:
            st.markdown(f"**Why r = 0 exceeds the clean error here.** A point 1-NN classifies correctly can be "
                        f"equidistant (up to round-off) from its nearest same-class and other-class training "
                        f"points: an arbitrarily small step flips it, so its minimal perturbation is 0 and it "
                        f"counts at r = 0. Such points, of {n_test}: {_listing(ties)}.")
with tabk:
    cert, emp = res.per_point(f"knn{K}_certified"), res.per_point(f"knn{K}_empirical")
    if not cert:
        st.info(f"The {K}-NN stage has not been run for this data set.")
    else:
        n_att = int(meta.get("n_attack", meta["n_test"]))
        st.plotly_chart(reproduction_figure(cert, grid, kind="certified", empirical_by_method=emp or None,
                                            title=f"{name}: {K}-NN certified (solid, {n_test} points)"
                                                  + (f" and region attack (dashed, {n_att} points)" if emp else "")),
                        key="r_figk")
        st.subheader(f"Certified robust error (%) of {K}-NN, {n_test} test points")
        st.dataframe(pd.concat([_clean(K, cert), _table(cert)], axis=1), key="r_tabc")
        extra = res.correct_at_radius_zero(f"knn{K}_certified")
        k_maj = (K + 1) // 2
        plurality = ("" if res.n_classes == 2 else
                     f" or one that {K}-NN gets right by a plurality of fewer than {k_maj} votes (possible with "
                     f"{res.n_classes} classes)")
        worst = max(extra, key=extra.get) if extra else None
        if worst is None or extra[worst] <= 0:
            here = " No such point in these results."
        else:
            at0 = robust_error_table({worst: cert[worst]}, [0.0]).iloc[0, 0]
            here = (f" Such points here, of {n_test}: {_listing(extra)} (for {display_name(worst)}: "
                    f"{100 * meta['methods'][worst]['clean_error'][str(K)]:.1f} % clean against {at0:.1f} % "
                    f"certified at r = 0).")
        st.markdown(f"**Why the certified error at r = 0 can exceed the clean error.** Theorem 1 gives a point a "
                    f"positive radius only when its {_nth(k_maj)} nearest same-class training point is strictly "
                    f"closer than its {_nth(k_maj)} nearest other-class one, that is, when a majority of its "
                    f"K = {K} nearest neighbours share its label. A correctly classified point with a tie at "
                    f"that rank{plurality} gets the bound 0 and counts at r = 0.{here}")
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
