"""The multipage app, driven headlessly with Streamlit's AppTest."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
PAGES = ["app_pages/train.py", "app_pages/boundaries.py", "app_pages/curves.py", "app_pages/examples.py", "app_pages/pairwise.py",
         "app_pages/reproduction.py"]


@pytest.fixture
def app(tmp_path, monkeypatch):
    monkeypatch.setenv("ARML_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.chdir(ROOT)
    return AppTest.from_file(APP, default_timeout=180)


def charts(at):
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def values(v):
    """A plotly JSON array: a list, or plotly's typed-array form {'dtype', 'bdata'}."""
    if isinstance(v, dict) and "bdata" in v:
        import base64

        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"])).tolist()
    return list(v)


def trace_names(at):
    return {t.get("name") for spec in charts(at) for t in spec["data"]}


def fast_arml(at):
    at.session_state["arml_params"]["n_epochs"] = 30


def test_train_page_trains_and_draws(app, tmp_path):
    at = app.run()
    assert not at.exception
    assert at.selectbox(key="w_dataset").value == "figure1"
    fast_arml(at)
    at.button(key="t_train").click().run()
    assert not at.exception and not at.error
    assert {"Euclidean (exact)", "ARML (exact)"} <= trace_names(at)
    assert len(list((tmp_path / "runs").glob("*arml*.npz"))) == 1
    # adding a method changes what is drawn
    at.multiselect(key="w_methods").select("lfda").run()
    at.button(key="t_train").click().run()
    assert "LFDA (exact)" in trace_names(at)


@pytest.mark.parametrize("dataset", ["figure1", "digits"])
def test_every_page_renders(app, dataset):
    at = app.run()
    at.selectbox(key="w_dataset").set_value(dataset).run()
    at.number_input(key="w_n_test").set_value(30).run()
    fast_arml(at)
    at.button(key="t_train").click().run()
    assert not at.exception, at.exception
    for page in PAGES:
        at.switch_page(page).run()
        assert not at.exception, (page, at.exception)
        assert not at.error, (page, [e.value for e in at.error])
        if page not in ("app_pages/examples.py", "app_pages/reproduction.py"):  # the latter: results/ may be absent
            assert charts(at), page


def test_state_survives_page_switches(app):
    at = app.run()
    at.selectbox(key="w_dataset").set_value("moons").run()
    at.number_input(key="w_K").set_value(3).run()
    at.switch_page("app_pages/curves.py").run()
    at.switch_page("app_pages/train.py").run()
    assert at.selectbox(key="w_dataset").value == "moons"
    assert at.number_input(key="w_K").value == 3
    assert at.query_params["dataset"] in ("moons", ["moons"]) and at.query_params["K"] in ("3", ["3"])


def test_url_query_parameters_set_the_selection(app):
    app.query_params["dataset"] = "iris"
    app.query_params["K"] = "3"
    app.query_params["methods"] = "euclidean,lfda"
    at = app.run()
    assert at.selectbox(key="w_dataset").value == "iris"
    assert at.number_input(key="w_K").value == 3
    assert at.multiselect(key="w_methods").value == ["euclidean", "lfda"]


def test_boundaries_slice_for_high_dimensional_data(app):
    at = app.run()
    at.selectbox(key="w_dataset").set_value("iris").run()
    at.multiselect(key="w_methods").set_value(["euclidean"]).run()
    at.button(key="t_train").click().run()
    at.switch_page("app_pages/boundaries.py").run()
    assert not at.exception and not at.error
    names = trace_names(at)
    assert "adversarial point" in names or any("misclassified" in w.value for w in at.warning)


def test_examples_page_confirms_the_flip(app):
    at = app.run()
    at.selectbox(key="w_dataset").set_value("digits").run()
    at.number_input(key="w_n_test").set_value(20).run()
    at.multiselect(key="w_methods").set_value(["euclidean"]).run()
    at.button(key="t_train").click().run()
    at.switch_page("app_pages/examples.py").run()
    at.radio(key="e_how").set_value("smallest positive radius").run()
    assert not at.exception
    assert any("flips" in s.value for s in at.success)
    assert charts(at)  # the image triplet


@pytest.mark.parametrize("K, match", [(2, "must be odd"), (11, "larger than class")])
def test_bad_k_is_an_error_message(app, K, match):
    at = app.run()
    at.number_input(key="w_K").set_value(K).run()
    assert not at.exception
    assert any(match in e.value for e in at.error)


def test_empty_method_selection(app):
    at = app.run()
    at.multiselect(key="w_methods").set_value([]).run()
    assert not at.exception
    assert any("at least one method" in i.value for i in at.info)


def test_pairwise_page_compares_the_spectral_defence(app):
    at = app.run()
    at.selectbox(key="w_dataset").set_value("digits").run()
    at.number_input(key="w_n_test").set_value(60).run()
    at.multiselect(key="w_methods").set_value(["euclidean", "spectral"]).run()
    at.button(key="t_train").click().run()
    at.switch_page("app_pages/pairwise.py").run()
    assert not at.exception and not at.error
    names = {t["name"] for t in charts(at)[0]["data"]}
    assert names == {"Euclidean (attack)", "Euclidean (not certified)",
                     "Spectral defence (attack)", "Spectral defence (not certified)"}
    # certified curves never lie below the attack curves: a pair the attack breaks is not certified
    data = {t["name"]: values(t["y"]) for t in charts(at)[0]["data"]}
    for m in ("Euclidean", "Spectral defence"):
        assert all(c >= a - 1e-9 for a, c in zip(data[f"{m} (attack)"], data[f"{m} (not certified)"]))


def test_curves_page_draws_certified_and_empirical_for_k3(app):
    at = app.run()
    at.selectbox(key="w_dataset").set_value("iris").run()
    at.multiselect(key="w_methods").set_value(["euclidean", "lfda"]).run()
    at.number_input(key="w_K").set_value(3).run()
    at.button(key="t_train").click().run()
    at.switch_page("app_pages/curves.py").run()
    assert not at.exception and not at.error
    data = {t["name"]: values(t["y"]) for t in charts(at)[0]["data"]}
    assert set(data) == {"Euclidean (certified)", "Euclidean (empirical)", "LFDA (certified)", "LFDA (empirical)"}
    # a certificate never claims more than an attack achieves: certified error >= empirical error
    for m in ("Euclidean", "LFDA"):
        assert all(c >= e - 1e-9 for c, e in zip(data[f"{m} (certified)"], data[f"{m} (empirical)"]))
    # the examples page attacks the chosen point for K = 3 and confirms the flip
    at.switch_page("app_pages/examples.py").run()
    at.radio(key="e_how").set_value("smallest positive radius").run()
    assert not at.exception
    assert any("flips" in s.value for s in at.success)


@pytest.mark.parametrize("payload, match", [
    (b"a,b,label\n0.1,0.2,x\n0.3,nan,y\n0.5,0.6,x\n0.7,0.8,y\n0.2,0.1,x\n0.9,0.4,y\n", "NaN|missing"),
    (b"a,b,label\n0.1,red,x\n0.3,blue,y\n0.5,red,x\n0.7,blue,y\n0.2,red,x\n0.9,red,y\n", "non-numeric|text"),
    (b"a,b,label\n0.1,0.2,x\n0.3,0.4,x\n0.5,0.6,x\n0.7,0.8,x\n0.2,0.1,x\n0.9,0.4,x\n", "class"),
])
def test_bad_uploads_are_error_messages(app, payload, match):
    import re

    at = app.run()
    at.session_state["upload"] = ("bad.csv", payload)
    at.session_state["sel"]["dataset"] = "upload:bad.csv"
    at.run()
    assert not at.exception
    assert any(re.search(match, e.value) for e in at.error), [e.value for e in at.error]


def test_good_upload_trains(app):
    rng = np.random.default_rng(0)
    X = rng.random((60, 3))
    y = (X[:, 0] > 0.5).astype(int)
    payload = "\n".join(",".join(f"{v:.4f}" for v in row) + f",{c}" for row, c in zip(X, y)).encode()
    at = app.run()
    at.session_state["upload"] = ("mine.csv", payload)
    at.session_state["sel"]["dataset"] = "upload:mine.csv"
    at.session_state["sel"]["methods"] = ["euclidean"]
    at.run()
    assert at.selectbox(key="w_dataset").value == "upload:mine.csv"
    at.button(key="t_train").click().run()
    assert not at.exception and not at.error
    assert "Euclidean (exact)" in trace_names(at)


def test_reproduction_page_without_results_says_how_to_make_them(app, tmp_path, monkeypatch):
    monkeypatch.setenv("ARML_RESULTS_DIR", str(tmp_path / "no_results"))
    at = app.run()
    at.switch_page("app_pages/reproduction.py").run()
    assert not at.exception and not at.error
    assert any("make reproduce" in i.value for i in at.info)


def test_reproduction_page_shows_tables_curves_and_deviations(app, tmp_path, monkeypatch):
    from arml_core.evaluation import reproduce as rp
    from arml_core.evaluation import summary

    plan = rp.make_plan("digits", methods=["euclidean", "lfda"], n_attack=8, grid=[0, 0.5, 1, 1.5])
    rp.reproduce_dataset("digits", plan, runs_dir=tmp_path / "runs_r", results_dir=tmp_path / "results",
                         device="cpu")
    monkeypatch.setenv("ARML_RESULTS_DIR", str(tmp_path / "results"))
    at = app.run()
    at.switch_page("app_pages/reproduction.py").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.selectbox(key="r_dataset").value == "digits"
    assert any("first 8 of the" in w.value for w in at.warning)  # the attack subsample is stated
    names = trace_names(at)
    assert {"Euclidean (exact)", "LFDA (exact)", "Euclidean (certified)", "LFDA (empirical)"} <= names
    # the 1-NN table equals the written CSV
    shown = at.dataframe[0].value  # the first table: 1-NN
    csv = summary.load_results("digits", tmp_path / "results").table("nn1").round(1)
    np.testing.assert_allclose(shown.loc["LFDA", ["0", "0.5", "1", "1.5"]].to_numpy(dtype=float),
                               csv.loc["lfda"].to_numpy(dtype=float))
    # a bad grid is a message, not a traceback
    at.text_input(key="r_grid_digits").set_value("0, a").run()
    assert not at.exception and at.error


def test_pruned_variants_appear_on_the_pages(app):
    """A pruning radius for a method adds '<method> + pruning (r = ...)' beside it; the
    decision-boundary panel of the variant marks the removed training points."""
    from arml_core.pruning import adversarial_pruning

    at = app.run()
    at.selectbox(key="w_dataset").set_value("moons").run()
    at.multiselect(key="w_methods").set_value(["euclidean"]).run()
    at.button(key="t_train").click().run()
    at.number_input(key="t_prune_euclidean").set_value(0.1).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "Euclidean + pruning (r = 0.1) (exact)" in trace_names(at)
    table = at.dataframe[0].value
    from arml_core.data import load_dataset

    ds = load_dataset("moons", n_test=200)
    kept = adversarial_pruning(ds.X_train, ds.y_train, None, 0.1)
    assert 0 < len(kept) < len(ds.y_train)
    assert table.loc["Euclidean + pruning (r = 0.1)", "training points"] == len(kept)
    assert table.loc["Euclidean", "training points"] == len(ds.y_train)
    at.switch_page("app_pages/boundaries.py").run()
    assert not at.exception and not at.error
    removed = [t for spec in charts(at) for t in spec["data"] if t.get("name") == "removed by pruning"]
    assert len(removed) == 1 and len(values(removed[0]["x"])) == len(ds.y_train) - len(kept)


def test_exact_knn_gap_on_curves_examples_and_boundaries(app):
    """K = 3 on small 2-D data: the curves page draws certified >= exact >= attack error, the
    examples page shows the three radii of one point in order, the boundaries page draws exact discs."""
    at = app.run()
    at.selectbox(key="w_dataset").set_value("moons").run()
    at.number_input(key="w_n_train").set_value(80).run()
    at.number_input(key="w_n_test").set_value(20).run()
    at.multiselect(key="w_methods").set_value(["euclidean", "lfda"]).run()
    at.number_input(key="w_K").set_value(3).run()
    at.button(key="t_train").click().run()
    at.switch_page("app_pages/curves.py").run()
    assert not at.exception and not at.error
    assert at.checkbox(key="c_exact").value  # on by default on small data
    gap = next(c for c in charts(at) if "exact" in c["layout"]["title"]["text"])
    data = {t["name"]: np.array(values(t["y"]), dtype=float) for t in gap["data"] if t.get("name")}
    for m in ("Euclidean", "LFDA"):
        cert, att = data[f"{m}: certified"], data[f"{m}: attack"]
        ex = next(v for k, v in data.items() if k.startswith(f"{m}: exact"))
        assert np.all(cert >= ex - 1e-9) and np.all(ex >= att - 1e-9)
    assert any("proven for" in md.value for md in at.markdown)
    at.switch_page("app_pages/examples.py").run()
    at.radio(key="e_how").set_value("smallest positive radius").run()
    assert not at.exception
    shown = {m.label: m.value for m in at.metric}
    cert = float(shown["Certified (Theorem 1)"])
    ex_label = next(k for k in shown if k.startswith("Exact"))
    ex = [float(v) for v in shown[ex_label].split(" – ")]
    att = float(shown["Attack (region)"])
    assert cert <= ex[0] + 1e-4 and ex[-1] <= att + 1e-4
    if ex_label == "Exact (proven)":  # the minimal perturbation is shown and flips the vote
        at.radio(key="e_which").set_value("exact (minimal)").run()
        assert any("(exact)" in s.value and "flips" in s.value for s in at.success)
    at.switch_page("app_pages/boundaries.py").run()
    at.radio(key="b_disc_kind").set_value("exact").run()
    assert not at.exception
    assert "exact radius" in trace_names(at)


def test_two_arml_settings_sit_side_by_side(app):
    at = app.run()  # figure1: Euclidean and ARML (app settings) train by themselves on the first view
    at.number_input(key="t_epochs").set_value(20).run()
    at.button(key="t_train").click().run()
    at.number_input(key="t_epochs").set_value(40).run()
    at.button(key="t_train").click().run()
    assert not at.exception and not at.error
    names = trace_names(at)
    assert "ARML (exact)" in names
    assert any((n or "").startswith("ARML (20 ep, lr 0.01") for n in names), names
    assert any((n or "").startswith("ARML (300 ep, lr 0.01") for n in names), names
    # a test-size change reuses both (nothing retrained: the button offers a retrain only)
    at.number_input(key="w_n_test").set_value(3).run()
    assert at.button(key="t_train").label == "Retrain all"
    at.checkbox(key="show_other_runs").uncheck().run()
    assert not any((n or "").startswith("ARML (20 ep") for n in trace_names(at))


def test_page_widgets_are_in_the_url_and_a_link_restores_them(app):
    # a fresh session opened on a link with page widgets lands on the same view (the browser test
    # checks that changing a widget writes the URL: AppTest does not mirror bound widgets there)
    fresh = AppTest.from_file(APP, default_timeout=180)
    for k, v in {"dataset": "figure1", "methods": "euclidean,lfda", "K": "1", "c_grid": "0,0.05,0.1",
                 "c_attack": "region"}.items():
        fresh.query_params[k] = v
    fresh.run()
    fresh.switch_page("app_pages/curves.py").run()
    assert not fresh.exception
    assert fresh.text_input(key="c_grid").value == "0,0.05,0.1"
    assert fresh.selectbox(key="c_attack").value == "region"
    assert {"Euclidean (exact)", "LFDA (exact)"} <= trace_names(fresh)  # trained by itself for the link
