from __future__ import annotations

import json

import numpy as np
import pytest

from arml_core.cli import main
from arml_core.data import load_dataset
from arml_core.evaluation.evaluate import evaluate, parse_grid
from arml_core.metric import robust_error_curve
from arml_core.persistence import load_metric, metric_to_bytes, save_metric
from arml_core.persistence import cached_metric, store_metric


def test_robust_error_curve_counts_radii_at_most_r():
    radii = np.array([0.0, 0.1, 0.2, 0.2, np.inf])
    np.testing.assert_allclose(robust_error_curve(radii, [0, 0.1, 0.15, 0.2, 1e9]), [0.2, 0.4, 0.4, 0.8, 0.8])
    with pytest.raises(ValueError, match="NaN"):
        robust_error_curve([0.1, np.nan], [0.1])
    with pytest.raises(ValueError, match="empty"):
        robust_error_curve([], [0.1])


def test_parse_grid():
    np.testing.assert_allclose(parse_grid("0, 0.2,0.1,0.1"), [0, 0.1, 0.2])
    for bad, match in (("a,b", "numbers"), ("", "empty"), ("-1", "non-negative")):
        with pytest.raises(ValueError, match=match):
            parse_grid(bad)


def test_evaluate_end_to_end_on_iris():
    ds = load_dataset("iris")
    ev = evaluate(ds, ["euclidean", "lfda"], 3, [0, 0.05, 0.1])
    tidy = ev.tidy()
    assert set(tidy.method) == {"euclidean", "lfda"} and len(tidy) == 6
    for m, r in ev.results.items():
        curve = tidy[tidy.method == m].robust_error.to_numpy()
        assert curve[0] == pytest.approx(r.clean_error)  # r = 0 is the clean error
        assert np.all(np.diff(curve) >= 0)
    table = ev.paper_table()
    assert list(table.index) == ["euclidean", "lfda"] and list(table.columns) == ["0", "0.05", "0.1"]
    with pytest.raises(ValueError, match="no method"):
        evaluate(ds, [], 3, [0])


def test_k1_uses_exact_radii():
    ds = load_dataset("figure1")
    ev = evaluate(ds, ["euclidean"], 1, [0, 0.1])
    assert ev.results["euclidean"].kind == "exact"


def test_metric_roundtrip_and_bad_files(tmp_path):
    G = np.arange(6.0).reshape(2, 3)
    path = save_metric(tmp_path / "m", G, dataset="iris", method="arml", params={"n_epochs": 3}, seed=1)
    assert path.suffix == ".npz" and path.with_suffix(".json").exists()
    G2, meta = load_metric(path, n_features=3)
    np.testing.assert_array_equal(G, G2)
    assert meta["method"] == "arml" and meta["params"] == {"n_epochs": 3} and "torch" in meta["versions"]
    with pytest.raises(ValueError, match="for 3 features"):
        load_metric(path, n_features=4)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable metric"):
        load_metric(tmp_path / "junk.npz")
    np.savez(tmp_path / "other.npz", weights=np.ones(3))
    with pytest.raises(ValueError, match="no 'components'"):
        load_metric(tmp_path / "other.npz")
    (tmp_path / "nan.npz").write_bytes(metric_to_bytes(np.full((2, 2), np.nan), {}))
    with pytest.raises(ValueError, match="NaN"):
        load_metric(tmp_path / "nan.npz")


def test_runs_cache_ignores_corrupt_files(tmp_path):
    G = np.eye(4)
    settings = {"seed": 1, "n_train": 0}
    store_metric(tmp_path, "iris", "arml", settings, G, 1.0)
    hit = cached_metric(tmp_path, "iris", "arml", settings, 4)
    assert hit is not None and np.array_equal(hit[0], G)
    assert cached_metric(tmp_path, "iris", "arml", {**settings, "seed": 2}, 4) is None
    next(tmp_path.glob("*.npz")).write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="ignoring the saved run"):
        assert cached_metric(tmp_path, "iris", "arml", settings, 4) is None


def test_cli_train_then_table_with_saved_metric(tmp_path, capsys):
    out = tmp_path / "arml.npz"
    assert main(["train", "--dataset", "iris", "--method", "arml", "--out", str(out),
                 "--param", "arml.n_epochs=20", "--quiet"]) == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["dataset"] == "iris" and meta["params"] == {"n_epochs": 20} and meta["seed"] == 42
    capsys.readouterr()
    assert main(["table", "--dataset", "iris", "--methods", f"euclidean,{out}", "--k", "3",
                 "--grid", "0,0.1", "--out", str(tmp_path / "t"), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "Certified robust error" in printed and "arml:arml" in printed
    summary = json.loads((tmp_path / "t.json").read_text())
    assert summary["K"] == 3 and set(summary["methods"]) == {"euclidean", "arml:arml"}
    assert (tmp_path / "t.csv").read_text().startswith("dataset,method,K,kind,radius")


@pytest.mark.parametrize("argv, match", [
    (["table", "--dataset", "nope", "--quiet"], "unknown"),
    (["table", "--dataset", "iris", "--k", "2", "--quiet"], "must be odd"),
    (["table", "--dataset", "iris", "--methods", "svm", "--quiet"], "unknown method 'svm'"),
    (["table", "--dataset", "iris", "--grid", "x", "--quiet"], "numbers"),
])
def test_cli_errors_are_messages_not_tracebacks(argv, match, capsys):
    assert main(argv) == 2
    assert match in capsys.readouterr().err


def test_cli_table_with_empirical_block(tmp_path, capsys):
    assert main(["table", "--dataset", "iris", "--methods", "euclidean,lfda", "--k", "3", "--grid", "0,0.1,0.2",
                 "--empirical", "region", "--out", str(tmp_path / "t"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "left: certified; right: empirical, region attack" in out
    summary = json.loads((tmp_path / "t.json").read_text())
    for m in ("euclidean", "lfda"):
        cert = summary["methods"][m]["robust_error"]
        emp = summary["methods"][m]["empirical_robust_error"]
        # certified robust error is an upper bound of what any attack achieves
        assert all(cert[r] >= emp[r] - 1e-12 for r in cert)
        assert cert["0.0"] == pytest.approx(summary["methods"][m]["clean_error"], abs=0.03)
