"""Page 5: pairwise similarity attacks and the spectral defence (Huai et al., TKDD 2022)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from arml_core.evaluation import parse_grid
from arml_core.pairwise import pair_attack, pair_bounds, pair_robustness_curves, sample_pairs
from arml_core.pairwise_verdict import BROKEN, MISJUDGED, misjudged_pairs, pair_verdicts
from arml_core.plots import display_name
from arml_core.plots_pairwise import pair_distance_figure, pair_images_figure, pair_success_figure
from app_pages._shared import dataset_key, open_page

page = open_page("Pairwise attacks", "pairwise", check_k=False, pruned=False)
sel, ds, K = page.sel, page.ds, page.K
recs = page.recs

c1, c2, c3 = st.columns(3)
n_pairs = int(c1.number_input("Pairs (half similar)", 10, 5000, 400, step=50, key="p_n"))
gamma_mode = c2.radio("Threshold γ (similar when D ≤ γ)", ["quantile of training distances", "fixed value"],
                      key="p_gmode")
if gamma_mode == "fixed value":
    gamma_spec = float(c3.number_input("γ", 1e-6, 1e6, 2.0, key="p_gamma"))
else:
    gamma_spec = f"q{c3.slider('quantile', 0.05, 0.95, 0.5, 0.05, key='p_q'):g}"
eps_text = st.text_input("Budgets ε (‖δᵢ‖∞ + ‖δⱼ‖∞), separated by commas", "0,0.01,0.03,0.05,0.07,0.09",
                         key="p_eps")
try:
    eps_grid = parse_grid(eps_text)
except ValueError as exc:
    st.error(str(exc))
    st.stop()
steps = int(st.slider("Attack steps", 5, 200, 50, key="p_steps"))

def test_pairs(ds, n_pairs: int, seed: int):
    """The test points clipped to [0, 1] and the seeded pairs drawn from them."""
    X = np.clip(ds.X_test, 0.0, 1.0)
    return (X, *sample_pairs(X, ds.y_test, n_pairs // 2, n_pairs - n_pairs // 2, random_state=seed))


try:
    X, ii, jj, y_pair = test_pairs(ds, n_pairs, int(sel["seed"]))
except ValueError as exc:
    st.error(str(exc))
    st.stop()
if np.any(X != ds.X_test):
    st.caption("Test features outside [0, 1] (the training scaler applied to test data) are clipped to [0, 1].")


@st.cache_data(show_spinner=False, max_entries=32)
def curves_for(_ds, ds_key: str, W_bytes: bytes, W_shape, gamma_spec, eps: tuple, steps: int, n_pairs: int,
               seed: int):
    """(gamma, attack success rate per eps, fraction not certified per eps); the key holds
    everything the result depends on (the pairs are drawn again from ds, n_pairs, seed)."""
    W = np.frombuffer(W_bytes).reshape(W_shape).copy()  # writable: torch reads it
    X, ii, jj, y_pair = test_pairs(_ds, n_pairs, seed)
    return pair_robustness_curves(W, _ds.X_train, _ds.y_train, X[ii], X[jj], y_pair, gamma_spec, eps, steps=steps)


rates, not_cert, gammas, rows = {}, {}, {}, {}
bar = st.progress(0.0, text="attacking")
for n, (m, rec) in enumerate(recs.items()):
    W = np.ascontiguousarray(rec["G"], dtype=np.float64)
    gammas[m], rates[m], not_cert[m] = curves_for(ds, dataset_key(ds, sel), W.tobytes(), W.shape, gamma_spec,
                                                  tuple(map(float, eps_grid)), steps, n_pairs, int(sel["seed"]))
    rows[f"{display_name(m)}: broken (%)"] = 100 * np.asarray(rates[m])
    rows[f"{display_name(m)}: not certified (%)"] = 100 * np.asarray(not_cert[m])
    bar.progress((n + 1) / len(recs), text=f"{display_name(m)} done")
bar.empty()
st.plotly_chart(pair_success_figure(eps_grid, rates, certified_by_method=not_cert,
                                    title=f"Pairwise attack on {len(ii)} {ds.name} test pairs"), key="p_curve")
wrong = {m: float(np.mean(misjudged_pairs(np.asarray(recs[m]["G"]), X[ii], X[jj], gammas[m], y_pair))) for m in recs}
st.caption("A pair counts as broken at ε when, after the attack, its decision disagrees with its label. "
           "Pairs the metric already misjudges with no perturbation (a similar pair farther than γ, a dissimilar "
           "one closer) count at every ε, as a misclassified point counts in the K-NN robust error: "
           + "; ".join(f"{display_name(m)} {100 * w:.1f} %" for m, w in wrong.items())
           + ". Dotted: pairs not certified, an upper bound on what any attack can break. Threshold γ ("
           + ("fixed" if gamma_mode == "fixed value" else f"the {gamma_spec[1:]} quantile of training-pair distances")
           + "): " + ", ".join(f"{display_name(m)} {g:.4g}" for m, g in gammas.items()) + ".")
st.dataframe(pd.DataFrame(rows, index=pd.Index([f"{e:g}" for e in eps_grid], name="ε")).round(2), key="p_table")

st.subheader("One pair in detail")
c1, c2, c3 = st.columns(3)
m = c1.selectbox("Metric", list(recs), format_func=display_name, key="p_m")
k = int(c2.number_input("Pair", 0, len(ii) - 1, 0, key="p_k"))
eps = float(c3.select_slider("ε", options=list(eps_grid), value=eps_grid[-1], key="p_e"))
W = np.asarray(recs[m]["G"])
res = pair_attack(W, X[ii[k:k + 1]], X[jj[k:k + 1]], gammas[m], eps, steps=steps, y_pair=y_pair[k:k + 1])
b = pair_bounds(W, X[ii[k:k + 1]], X[jj[k:k + 1]], eps, direction=res.direction)
verdict = pair_verdicts(res)[0]
kind = "similar" if y_pair[k] > 0 else "dissimilar"
d0, d1, g = float(res.dist_before[0]), float(res.dist_after[0]), gammas[m]
st.write(f"Pair {k}: test points {ii[k]} and {jj[k]} ({kind}: labels {ds.classes[ds.y_test[ii[k]]]} and "
         f"{ds.classes[ds.y_test[jj[k]]]}). The attack {'pushes them apart' if res.direction[0] > 0 else 'pulls them together'}"
         f" with ε = {eps:g}, ‖δᵢ‖∞ = {np.abs(res.delta_i[0]).max():.3g} and ‖δⱼ‖∞ = {np.abs(res.delta_j[0]).max():.3g}.")
c = st.columns(3)
c[0].metric("Squared distance D after the attack", f"{d1:.4g}", f"{d1 - d0:+.4g}", delta_color="off")
c[1].metric("Published bound", f"{b.published[0]:.4g}")
c[2].metric("Rigorous bound", f"{b.rigorous[0]:.4g}")
st.plotly_chart(pair_distance_figure(d0, d1, g, published=float(b.published[0]), rigorous=float(b.rigorous[0]),
                                     eps=eps), key="p_bars")
if verdict == MISJUDGED:
    st.info(f"This {kind} pair is already misjudged with no perturbation: D = {d0:.4g} is "
            f"{'above' if d0 > g else 'at or below'} γ = {g:.4g}, so the metric calls it "
            f"{'dissimilar' if d0 > g else 'similar'}. It counts as broken at every ε (its certified radius is 0); "
            f"the attack has nothing to flip.")
elif verdict == BROKEN:
    st.warning(f"The attack flips this pair's decision with ε = {eps:g}: D goes from {d0:.4g} to {d1:.4g}, "
               f"across γ = {g:.4g}.")
else:
    st.success(f"The decision survives the attack with ε = {eps:g}: D goes from {d0:.4g} to {d1:.4g}, "
               f"still on the {'similar' if d1 <= g else 'dissimilar'} side of γ = {g:.4g}.")
if b.exceeds_published(res.dist_after)[0]:
    st.warning("The attacked distance goes beyond the published first-order bound (it drops the δᵀWᵀWδ term).")
if b.exceeds_rigorous(res.dist_after)[0]:
    st.error("The attacked distance goes beyond the rigorous bound: this is a bug, please report it.")
if ds.image_shape is not None:
    st.plotly_chart(pair_images_figure(X[ii[k]], X[jj[k]], res.X_i_adv[0], res.X_j_adv[0], ds.image_shape),
                    key="p_img")
