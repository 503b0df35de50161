"""The Paper reproduction and Pairwise attacks pages agree with what they show: the page's
robust errors are results/'s tables, and a pair already misjudged is called so."""
from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from arml_core.data import load_dataset
from arml_core.evaluation import robust_error_table
from arml_core.evaluation.summary import load_results, results_datasets
from arml_core.metric import robust_error_curve
from arml_core.pairwise import pair_distances, resolve_gamma, sample_pairs
from arml_core.plots import display_name

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
DATASETS = results_datasets(RESULTS)


def _values(v):
    if isinstance(v, dict) and "bdata" in v:
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"])).astype(float)
    return np.asarray(v, dtype=float)


def _csv_table(dataset: str, fname: str, column: str = "robust_error_pct") -> pd.DataFrame:
    """results/<dataset>/<fname> read with pandas alone: rows = display names, columns = radii."""
    df = pd.read_csv(RESULTS / dataset / fname)
    wide = df.pivot(index="method", columns="radius", values=column)
    wide.index = [display_name(m) for m in wide.index]
    wide.columns = [f"{c:g}" for c in wide.columns]
    return wide


def _same(page: pd.DataFrame, csv: pd.DataFrame, what: str) -> None:
    page = page.loc[csv.index, csv.columns].astype(float)
    diff = (page - csv).abs()
    assert (diff < 1e-9).all().all(), f"{what}: the page differs from results/:\n{page[diff >= 1e-9]}"


@pytest.fixture(scope="module")
def reproduction_runs():
    """The reproduction page once per committed data set (the page alone: it reads results/)."""
    at = AppTest.from_file(str(ROOT / "app_pages" / "reproduction.py"), default_timeout=120)
    out = {}
    for name in DATASETS:
        (at.run() if not out else at.selectbox(key="r_dataset").set_value(name).run())
        assert at.selectbox(key="r_dataset").value == name
        assert not at.exception and not at.error
        out[name] = ([d.value for d in at.dataframe], [json.loads(c.proto.spec) for c in at.get("plotly_chart")],
                     [m.value for m in at.markdown])
    return out


@pytest.mark.skipif(not DATASETS, reason="no committed results/")
@pytest.mark.parametrize("dataset", DATASETS)
def test_reproduction_page_numbers_are_the_results_tables(reproduction_runs, dataset):
    frames, charts, _ = reproduction_runs[dataset]
    meta = json.loads((RESULTS / dataset / "metrics_meta.json").read_text())
    K = meta["K"]
    expected = [_csv_table(dataset, "nn1_exact.csv"), _csv_table(dataset, f"knn{K}_certified.csv"),
                _csv_table(dataset, f"knn{K}_empirical.csv"),
                _csv_table(dataset, f"knn{K}_empirical.csv", "certified_same_points_pct")]
    assert len(frames) == 5  # 1-NN, certified, empirical, certified on the attacked points, stage times
    for page, csv, what in zip(frames, expected, ["1-NN exact", "certified", "empirical", "certified (attacked)"]):
        _same(page, csv, f"{dataset} {what}")
    # the clean columns are the clean errors of metrics_meta.json
    for page, k in ((frames[0], "1"), (frames[1], str(K))):
        for m, v in meta["methods"].items():
            assert page.loc[display_name(m), f"clean {k}-NN"] == pytest.approx(100 * v["clean_error"][k], abs=0.051)
    # each curve passes through its table's numbers at the paper's grid (the markers and the line)
    grid = np.asarray(meta["grid"])
    for spec, csv_by_kind in ((charts[0], {"exact": expected[0]}),
                              (charts[1], {"certified": expected[1], "empirical": expected[2]})):
        seen = 0
        for tr in spec["data"]:
            name, kind = re.fullmatch(r"(.+) \((\w+)\)( at the grid)?", tr["name"]).group(1, 2)
            x, y = _values(tr["x"]), _values(tr["y"])
            at_grid = np.searchsorted(x, grid)
            assert np.array_equal(x[at_grid], grid)
            np.testing.assert_allclose(y[at_grid], csv_by_kind[kind].loc[name].to_numpy(float), atol=1e-9)
            seen += 1
        assert seen == 2 * sum(len(c) for c in csv_by_kind.values())


def test_a_radius_stored_on_a_grid_radius_counts_as_its_table_says(tmp_path):
    """radii.csv keeps 8 digits: a radius a few ulps above r = 0.1 is stored as 0.1; the page
    must still count it above 0.1, as the table (counted at full precision) does."""
    true = np.array([0.0, 0.1 + 2.8e-17, 0.1, 0.05, 0.2 - 2e-17, 0.3, np.inf, 0.1 + 5e-17])
    grid = np.array([0.0, 0.1, 0.2, 0.3])
    d = tmp_path / "toy"
    d.mkdir()
    err = robust_error_curve(true, grid)
    pd.DataFrame({"method": "euclidean", "radius": grid, "robust_error_pct": 100 * err, "n_points": len(true),
                  "kind": "exact"}).to_csv(d / "nn1_exact.csv", index=False, float_format="%.6g")
    pd.DataFrame({"label": np.zeros(len(true), int), "euclidean.nn1_exact": true}).to_csv(
        d / "radii.csv", index_label="test_index", float_format="%.8g")
    (d / "metrics_meta.json").write_text(json.dumps({"K": 11, "grid": list(grid), "n_test": len(true),
                                                     "methods": {"euclidean": {"clean_error": {"1": 0.125}}}}))
    stored = pd.read_csv(d / "radii.csv")["euclidean.nn1_exact"].to_numpy()
    assert robust_error_curve(stored, [0.1])[0] > err[1]  # what the page showed before
    res = load_results("toy", tmp_path)
    radii = res.per_point("nn1_exact")
    table = robust_error_table(radii, grid)
    np.testing.assert_allclose(table.to_numpy()[0], 100 * err)
    np.testing.assert_allclose(table.to_numpy()[0], res.table("nn1").to_numpy()[0].astype(float))
    np.testing.assert_allclose(radii["euclidean"], true, rtol=1e-8)  # moved by at most the rounding
    assert res.correct_at_radius_zero("nn1_exact") == {"euclidean": 0}


@pytest.fixture
def app(tmp_path, monkeypatch):
    monkeypatch.setenv("ARML_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.chdir(ROOT)
    return AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)


def test_pairwise_page_calls_a_misjudged_pair_misjudged(app):
    at = app.run()
    at.selectbox(key="w_dataset").set_value("digits").run()
    at.number_input(key="w_n_test").set_value(60).run()
    at.multiselect(key="w_methods").set_value(["euclidean"]).run()
    at.button(key="t_train").click().run()
    at.switch_page("app_pages/pairwise.py").run()
    at.number_input(key="p_n").set_value(40).run()
    assert not at.exception and not at.error
    # the same pairs drawn independently: Euclidean D, the median training distance as gamma
    ds = load_dataset("digits", n_test=60, seed=42)
    X = np.clip(ds.X_test, 0, 1)
    ii, jj, y = sample_pairs(X, ds.y_test, 20, 20, random_state=42)
    eye = np.eye(X.shape[1])
    gamma = resolve_gamma("q0.5", eye, ds.X_train, ds.y_train)
    shown = re.search(r"Threshold γ \(the 0.5 quantile[^)]*\): Euclidean ([0-9]+\.[0-9]+)", " ".join(c.value for c in at.caption))
    assert float(shown.group(1)) == pytest.approx(gamma, rel=1e-3)  # shown to 4 digits
    wrong = (pair_distances(eye, X[ii], X[jj]) <= gamma) != (y > 0)
    assert wrong.any() and not wrong.all()
    for k in (int(np.argmax(wrong)), int(np.argmin(wrong))):
        at.number_input(key="p_k").set_value(k).run()
        assert not at.exception
        text = " ".join(m.value for m in at.markdown)
        assert f"test points {ii[k]} and {jj[k]}" in text
        said = [e.value for e in (*at.info, *at.warning, *at.success) if "misjudged" in e.value
                or "flips" in e.value or "survives" in e.value]
        assert len(said) == 1, said
        if wrong[k]:
            assert "already misjudged" in said[0] and "flips" not in said[0]
        else:
            assert "misjudged" not in said[0]
