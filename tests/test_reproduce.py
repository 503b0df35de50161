"""The paper reproduction: plans, caching/resume, results files, the summary, and the
Euclidean 1-NN rows on pendigits against an independent brute force."""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import nnls

from arml_core.evaluation import reproduce as rp
from arml_core.evaluation import summary
from arml_core.cli import main as cli_main
from arml_core.data import load_dataset
from arml_core.knn import MahalanobisKNN
from arml_core.persistence import cached_metric, run_key, store_metric


def _ldp_nnls(A, b):
    """min ||z|| s.t. A z <= b by the classical LDP -> NNLS reduction (Lawson & Hanson,
    ch. 23), with scipy's NNLS: an implementation independent of arml_core.exact.
    Returns inf when infeasible."""
    G, h = -A, -b  # G z >= h
    E = np.vstack([G.T, h[None, :]])
    f = np.zeros(E.shape[0])
    f[-1] = 1.0
    u, _ = nnls(E, f, maxiter=50 * E.shape[1])
    r = E @ u - f
    if np.linalg.norm(r) < 1e-12:
        return np.inf
    return float(np.linalg.norm(-r[:-1] / r[-1]))


def euclidean_1nn_radii_bruteforce(X_train, y_train, X_test, y_test):
    """Exact Euclidean 1-NN minimal perturbations by brute force: for every other-class
    training point n, the distance from x to the set of points at least as close to n
    as to every training point of x's class (an LDP), minimised over n. Cells are
    visited in order of a sound lower bound (the bisector with x's nearest same-class
    point) and the loop stops when that bound passes the best distance found."""
    out = np.empty(len(X_test))
    for t, (x, y) in enumerate(zip(X_test, y_test)):
        d2 = ((X_train - x) ** 2).sum(1)
        same, other = np.flatnonzero(y_train == y), np.flatnonzero(y_train != y)
        if d2[other].min() <= d2[same].min():
            out[t] = 0.0  # misclassified, or on a tie
            continue
        P = X_train[same]
        p0 = X_train[same[np.argmin(d2[same])]]
        N = X_train[other]
        lb = (d2[other] - d2[same].min()) / (2 * np.linalg.norm(N - p0, axis=1))
        best = np.inf
        for j in np.argsort(lb):
            if lb[j] >= best:
                break
            n = N[j]
            # ||x+z-n||^2 <= ||x+z-p||^2  <=>  2 (p - n).z <= ||x-p||^2 - ||x-n||^2
            A = 2 * (P - n)
            b = ((x - P) ** 2).sum(1) - ((x - n) ** 2).sum()
            best = min(best, _ldp_nnls(A, b))
        out[t] = best
    return out


def test_ldp_nnls_matches_a_hand_solved_case():
    # min ||z|| s.t. z1 >= 1, z2 >= 2  ->  ||(1, 2)||
    assert _ldp_nnls(-np.eye(2), -np.array([1.0, 2.0])) == pytest.approx(np.sqrt(5))
    assert _ldp_nnls(np.array([[1.0], [-1.0]]), np.array([-1.0, -1.0])) == np.inf  # z <= -1 and z >= 1


@pytest.fixture(scope="module")
def pendigits_cli(shared_data_dir, tmp_path_factory):
    """The CLI's Euclidean rows on pendigits, paper protocol (full training set)."""
    root = tmp_path_factory.mktemp("repro")
    rc = cli_main(["reproduce", "--datasets", "pendigits", "--methods", "euclidean", "--stages", "fit,nn1",
                   "--data-dir", str(shared_data_dir), "--runs-dir", str(root / "runs"),
                   "--results-dir", str(root / "results"), "--device", "cpu", "--quiet"])
    assert rc == 0
    return root


def test_cli_euclidean_1nn_rows_equal_an_independent_bruteforce(pendigits_cli, shared_data_dir):
    ds = load_dataset("pendigits", data_dir=shared_data_dir, n_test=1000, seed=42)
    brute = euclidean_1nn_radii_bruteforce(ds.X_train, ds.y_train, ds.X_test, ds.y_test)
    table = pd.read_csv(pendigits_cli / "results" / "pendigits" / "nn1_exact.csv")
    grid = rp.paper_grid("pendigits")
    assert sorted(table.radius) == pytest.approx(list(grid))
    # no brute-force radius sits on a grid point (else round-off could move a point across it)
    assert np.min(np.abs(brute[:, None] - grid[None, 1:])) > 1e-7
    expected = (brute[:, None] <= grid[None, :]).sum(0)  # non-robust points per radius
    got = table.set_index("radius").robust_error_pct.reindex(grid).to_numpy() * len(brute) / 100
    np.testing.assert_array_equal(np.rint(got).astype(int), expected)
    assert np.max(np.abs(got - expected)) < 1e-6
    # and point by point
    radii = pd.read_csv(pendigits_cli / "results" / "pendigits" / "radii.csv")
    np.testing.assert_allclose(radii["euclidean.nn1_exact"], brute, rtol=1e-6, atol=1e-9)


def test_rerun_resumes_from_the_cache(pendigits_cli, shared_data_dir):
    meta = json.loads((pendigits_cli / "results" / "pendigits" / "metrics_meta.json").read_text())
    assert meta["methods"]["euclidean"]["cached"] == {"fit": False, "nn1": False}
    rc = cli_main(["reproduce", "--datasets", "pendigits", "--methods", "euclidean", "--stages", "fit,nn1",
                   "--data-dir", str(shared_data_dir), "--runs-dir", str(pendigits_cli / "runs"),
                   "--results-dir", str(pendigits_cli / "results"), "--device", "cpu", "--quiet"])
    assert rc == 0
    meta2 = json.loads((pendigits_cli / "results" / "pendigits" / "metrics_meta.json").read_text())
    assert meta2["methods"]["euclidean"]["cached"] == {"fit": True, "nn1": True}
    assert meta2["methods"]["euclidean"]["stage_s"] == meta["methods"]["euclidean"]["stage_s"]


# ------------------------------------------------------------------ small end-to-end runs


@pytest.fixture(scope="module")
def splice_run(shared_data_dir, tmp_path_factory):
    """Every stage on splice (the smallest paper data set) with two quick methods."""
    root = tmp_path_factory.mktemp("splice")
    plan = rp.make_plan("splice", profile="cpu", methods=["euclidean", "lfda"], n_attack=40)
    meta = rp.reproduce_dataset("splice", plan, data_dir=shared_data_dir, runs_dir=root / "runs",
                                results_dir=root / "results", device="cpu")
    summary.write_summary(root / "results")
    return root, meta


def test_results_files_and_soundness(splice_run, shared_data_dir):
    root, meta = splice_run
    shared = shared_data_dir
    d = root / "results" / "splice"
    for name in ("metrics_meta.json", "nn1_exact.csv", "knn11_certified.csv", "knn11_empirical.csv", "radii.csv"):
        assert (d / name).exists(), name
    assert meta["violations"] == []
    res = summary.load_results("splice", root / "results")
    radii = res.radii
    for m in ("euclidean", "lfda"):
        exact, bound = radii[f"{m}.nn1_exact"], radii[f"{m}.nn1_bound"]
        assert np.all(bound <= exact * (1 + 1e-6) + 1e-12)
        cert, emp = radii[f"{m}.knn11_certified"].to_numpy(), radii[f"{m}.knn11_empirical"].to_numpy()
        att = ~np.isnan(emp)
        assert att.sum() == 40 and att[:40].all()
        assert np.all(cert[att] <= emp[att] * (1 + 1e-6) + 1e-12)
        # certified error >= empirical error on the attacked points, at every radius
        e = res.empirical[res.empirical.method == m]
        assert np.all(e.certified_same_points_pct >= e.robust_error_pct - 1e-9)
        # r = 0 of the empirical curve is the clean error of the attacked points
        G, _ = cached_metric(root / "runs", "splice", m, rp._fit_settings(rp.make_plan("splice"), m), 60)
        ds = load_dataset("splice", data_dir=shared, n_test=1000, seed=42)
        wrong = MahalanobisKNN(G.T @ G, 11).fit(ds.X_train, ds.y_train).predict(ds.X_test[:40]) != ds.y_test[:40]
        np.testing.assert_array_equal(emp[:40] == 0, wrong)
        assert e.robust_error_pct.iloc[0] == pytest.approx(100 * wrong.mean())
    t = res.table("certified")
    assert list(t.index) == ["euclidean", "lfda"] and list(t.columns) == ["0", "0.1", "0.2", "0.3", "0.4", "0.5"]
    assert np.all(np.diff(t.to_numpy(), axis=1) >= 0)  # robust error grows with the radius


def test_summary_states_deviations_and_tables(splice_run):
    root, _ = splice_run
    text = (root / "results" / "SUMMARY.md").read_text()
    assert "## splice" in text
    assert "first 40 of the 1000 test points" in text  # the attack subsample is stated
    assert "not the paper's black-box Boundary Attack" in text
    assert "1-NN, exact robust error" in text and "11-NN: certified" in text
    assert "Wall time per stage" in text
    # every Markdown table is well formed: as many cells in each row as in its header
    blocks, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            blocks.append(current)
            current = []
    assert len(blocks) >= 5
    for block in blocks:
        cells = [line.count("|") for line in block]
        assert len(set(cells)) == 1, block[:3]
        assert set(block[1].replace("|", "")) == {"-"}


def test_a_different_metric_under_the_same_key_is_not_served_from_the_cache(splice_run, shared_data_dir, tmp_path):
    """Stage files carry fingerprints of their metric and data: a changed metric recomputes."""
    root, meta = splice_run
    import shutil

    runs = tmp_path / "runs"
    shutil.copytree(root / "runs", runs)
    plan = rp.make_plan("splice", methods=["euclidean"], n_attack=40)
    key = run_key("splice", "euclidean", rp._fit_settings(plan, "euclidean"))
    G, saved = cached_metric(runs, "splice", "euclidean", rp._fit_settings(plan, "euclidean"), 60)
    from arml_core.persistence import store_metric

    store_metric(runs, "splice", "euclidean", rp._fit_settings(plan, "euclidean"), 2.0 * np.diag(np.linspace(0.5, 1, 60)),
                 0.0, saved["info"])
    meta2 = rp.reproduce_dataset("splice", plan, data_dir=shared_data_dir, runs_dir=runs,
                                 results_dir=tmp_path / "results", device="cpu")
    assert meta2["methods"]["euclidean"]["cached"] == {"fit": True, "nn1": False, "knn11": False, "attack": False}
    old = pd.read_csv(root / "results" / "splice" / "radii.csv")["euclidean.nn1_exact"]
    new = pd.read_csv(tmp_path / "results" / "splice" / "radii.csv")["euclidean.nn1_exact"]
    assert not np.allclose(old, new)
    assert meta2["violations"] == []
    # a metric fitted on other data is refitted
    store_metric(runs, "splice", "euclidean", rp._fit_settings(plan, "euclidean"), np.eye(60), 0.0,
                 {"data_fingerprint": "something else"})
    meta3 = rp.reproduce_dataset("splice", plan, data_dir=shared_data_dir, runs_dir=runs,
                                 results_dir=tmp_path / "results", device="cpu")
    assert meta3["methods"]["euclidean"]["cached"]["fit"] is False
    assert key in meta3["methods"]["euclidean"]["fit_key"]


def test_a_partial_rerun_keeps_the_tables_it_did_not_recompute(splice_run, shared_data_dir, tmp_path):
    root, _ = splice_run
    plan = rp.make_plan("splice", methods=["euclidean"], n_attack=40)
    rp.reproduce_dataset("splice", plan, data_dir=shared_data_dir, runs_dir=root / "runs",
                         results_dir=tmp_path / "r", device="cpu")
    d = tmp_path / "r" / "splice"
    before = {n: (d / n).read_bytes() for n in ("knn11_empirical.csv", "knn11_certified.csv")}
    plan = rp.make_plan("splice", methods=["euclidean"], stages=["fit", "nn1"])
    meta = rp.reproduce_dataset("splice", plan, data_dir=shared_data_dir, runs_dir=root / "runs",
                                results_dir=tmp_path / "r", device="cpu")
    assert {n: (d / n).read_bytes() for n in before} == before
    assert meta["merge"]["kept"] == {"euclidean": ["knn11", "attack"]}
    assert any("Boundary Attack" in x for x in meta["deviations"])  # the kept attack rows keep their deviation
    assert meta["n_attack"] == 40 and "euclidean/knn11" in meta["checks"]


def test_a_violation_is_reported(splice_run, monkeypatch, shared_data_dir):
    """A certified radius above an attack norm must be flagged, not averaged away."""
    root, _ = splice_run
    import arml_core.robustness.certify as certify

    real = certify.certified_radii
    monkeypatch.setattr(certify, "certified_radii", lambda *a, **k: real(*a, **k) * 50 + 1.0)
    rc = cli_main(["reproduce", "--datasets", "splice", "--methods", "euclidean", "--n-attack", "10",
                   "--data-dir", str(shared_data_dir), "--runs-dir", str(root / "runs_bad"),
                   "--results-dir", str(root / "results_bad"), "--device", "cpu", "--quiet"])
    assert rc == 1  # a violation fails the command
    meta = summary.load_results("splice", root / "results_bad").meta
    assert any("certified radius above the attack norm" in v for v in meta["violations"])
    assert any("closed-form bounds above the exact radius" in v for v in meta["violations"])
    assert "SOUNDNESS VIOLATIONS" in summary.summary_markdown(root / "results_bad")


def test_a_failing_method_is_recorded_and_the_others_go_on(splice_run, monkeypatch, shared_data_dir, tmp_path):
    import arml_core.evaluation.reproduce as mod

    real = mod.fit_metric

    def fit(ds, method, **kw):
        if method == "lfda":
            raise ValueError("diverged")
        return real(ds, method, **kw)

    monkeypatch.setattr(mod, "fit_metric", fit)
    plan = rp.make_plan("splice", methods=["lfda", "euclidean"], stages=["fit", "nn1"])
    meta = rp.reproduce_dataset("splice", plan, data_dir=shared_data_dir, runs_dir=tmp_path / "runs",
                                results_dir=tmp_path / "r", device="cpu")
    assert any("LFDA: fit failed" in f and "diverged" in f for f in meta["failures"])
    table = pd.read_csv(tmp_path / "r" / "splice" / "nn1_exact.csv")
    assert set(table.method) == {"euclidean"}
    assert "Methods that failed" in summary.summary_markdown(tmp_path / "r")


# ------------------------------------------------------------------ plans and bad input


def test_plans():
    full = rp.make_plan("mnist", profile="full")
    assert full.reference_n_train is None and full.fit_n_train == {} and full.n_attack is None
    assert len(full.deviations()) == 1 and "Boundary Attack" in full.deviations()[0]  # the attack itself
    assert rp.make_plan("mnist", profile="full", stages=["fit", "nn1"]).deviations() == []
    assert full.grid == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    cpu = rp.make_plan("mnist", profile="cpu")
    devs = " ".join(cpu.deviations(60000, 3000))
    assert "subsampled to 3000 of 60000" in devs and "NCA fitted on a stratified subsample of 2000" in devs
    assert rp.make_plan("satimage").grid == pytest.approx([0, 0.15, 0.3, 0.45, 0.6, 0.75])
    assert rp.make_plan("pendigits", n_attack=5000).n_attack is None
    with pytest.raises(ValueError, match="profile"):
        rp.make_plan("splice", profile="fast")
    with pytest.raises(ValueError, match="unknown method"):
        rp.make_plan("splice", methods=["svm"])
    with pytest.raises(ValueError, match="no paper grid"):
        rp.paper_grid("iris")
    with pytest.raises(ValueError, match="n_attack"):
        rp.make_plan("splice", n_attack=0)
    with pytest.raises(ValueError, match="add the knn11 stage"):
        rp.make_plan("splice", stages=["fit", "attack"])
    gpu = rp.make_plan("mnist", profile="gpu")
    assert gpu.reference_n_train is None and gpu.n_attack is None and gpu.fit_n_train["nca"] == 2000


def test_cli_rejects_unknown_dataset_and_stage(tmp_path, capsys):
    assert cli_main(["reproduce", "--datasets", "iris", "--results-dir", str(tmp_path)]) == 2
    assert "unknown data set" in capsys.readouterr().err
    assert cli_main(["reproduce", "--datasets", "splice", "--stages", "fit,plot", "--results-dir", str(tmp_path)]) == 2
    assert "unknown stage" in capsys.readouterr().err


def test_cli_skips_missing_data_with_a_message(tmp_path, capsys):
    rc = cli_main(["reproduce", "--datasets", "usps", "--data-dir", str(tmp_path / "empty"),
                   "--results-dir", str(tmp_path / "r"), "--runs-dir", str(tmp_path / "runs")])
    assert rc == 1
    assert "data missing" in capsys.readouterr().err


def test_load_results_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="reproduce --datasets splice"):
        summary.load_results("splice", tmp_path)
    (tmp_path / "splice").mkdir()
    (tmp_path / "splice" / "metrics_meta.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        summary.load_results("splice", tmp_path)
    assert summary.results_datasets(tmp_path / "nowhere") == []
    assert "No results yet" in summary.summary_markdown(tmp_path / "nowhere")


def test_corrupt_stage_cache_is_recomputed(tmp_path):
    path = tmp_path / "x__nn1__abc.npz"
    path.write_bytes(b"not an npz")
    calls = []
    arrays, _, cached = rp._cached_stage(path, lambda: calls.append(1) or {"a": np.arange(3)})
    assert not cached and calls == [1]
    arrays, _, cached = rp._cached_stage(path, lambda: calls.append(1) or {"a": np.arange(3)})
    assert cached and calls == [1] and arrays["a"].tolist() == [0, 1, 2]


# ------------------------------------------------------------------ beyond the paper: adversarial pruning


def test_defence_pruning_adds_rows_beyond_the_protocol_and_leaves_the_paper_rows_alone(shared_data_dir, tmp_path,
                                                                                       capsys):
    from arml_core.pruning import adversarial_pruning
    from arml_core.robustness.exact import minimal_perturbations

    args = ["reproduce", "--datasets", "splice", "--methods", "euclidean,lfda", "--stages", "fit,nn1,knn11",
            "--data-dir", str(shared_data_dir), "--runs-dir", str(tmp_path / "runs"), "--device", "cpu", "--quiet"]
    assert cli_main(args + ["--results-dir", str(tmp_path / "pruned"), "--defence", "pruning",
                            "--pruning-radius", "1.3"]) == 0
    out = capsys.readouterr().out
    assert "lfda+pruning (beyond the paper's protocol) kept" in out
    res = summary.load_results("splice", tmp_path / "pruned")
    assert res.methods == ["euclidean", "euclidean+pruning", "lfda", "lfda+pruning"]
    assert res.extension_methods == ["euclidean+pruning", "lfda+pruning"]
    meta = res.meta
    assert meta["violations"] == [] and meta["failures"] == [] and meta["plan"]["pruning_radius"] == 1.3
    assert any(d.startswith("Beyond the paper's protocol") for d in meta["deviations"])
    ds = load_dataset("splice", data_dir=shared_data_dir, n_test=1000, seed=42)
    for m in ("euclidean", "lfda"):
        p = meta["methods"][f"{m}+pruning"]["pruning"]
        assert p["radius"] == 1.3 and p["exact"] and p["solver"] == "matching" and p["n_kept"] < p["n_train"] == 1000
        # the pruned rows are K-NN with the method's metric on the kept points
        G, _ = cached_metric(tmp_path / "runs", "splice", m, rp._fit_settings(rp.make_plan("splice"), m), 60)
        M = G.T @ G
        kept = adversarial_pruning(ds.X_train, ds.y_train, M, 1.3)
        assert len(kept) == p["n_kept"]
        wrong = MahalanobisKNN(M, 11).fit(ds.X_train[kept], ds.y_train[kept]).predict(ds.X_test) != ds.y_test
        assert meta["methods"][f"{m}+pruning"]["clean_error"]["11"] == pytest.approx(wrong.mean())
        exact, _ = minimal_perturbations(ds.X_train[kept], ds.y_train[kept], ds.X_test, ds.y_test, M, device="cpu")
        np.testing.assert_allclose(res.radii[f"{m}+pruning.nn1_exact"], exact, rtol=1e-6, atol=1e-9)
    text = (tmp_path / "pruned" / "SUMMARY.md").read_text()
    assert "Beyond the paper's protocol: adversarial pruning" in text and "| LFDA + pruning | 1.3 |" in text

    # without --defence: the same paper rows and claims, and nothing of the extension
    assert cli_main(args + ["--results-dir", str(tmp_path / "plain")]) == 0
    plain = summary.load_results("splice", tmp_path / "plain")
    assert plain.methods == ["euclidean", "lfda"] and "pruning_radius" not in plain.meta["plan"]
    assert summary.claims(plain) == summary.claims(res)
    for which in ("nn1", "certified"):
        pd.testing.assert_frame_equal(plain.table(which), res.table(which).loc[["euclidean", "lfda"]])
    assert "pruning" not in (tmp_path / "plain" / "SUMMARY.md").read_text()
    # a rerun takes the pruned sets from the cache
    assert cli_main(args + ["--results-dir", str(tmp_path / "pruned"), "--defence", "pruning",
                            "--pruning-radius", "1.3"]) == 0
    again = summary.load_results("splice", tmp_path / "pruned").meta["methods"]["lfda+pruning"]["cached"]
    assert again == {"pruning": True, "nn1": True, "knn11": True}


def test_pruning_plans_and_bad_input(tmp_path, capsys):
    assert rp.make_plan("pendigits").pruning_radius is None
    assert rp.make_plan("pendigits", defence="pruning").pruning_radius == pytest.approx(0.2)
    assert rp.make_plan("satimage", defence="pruning").pruning_radius == pytest.approx(0.15)
    assert rp.make_plan("usps", defence="pruning").pruning_radius == pytest.approx(1.0)
    assert rp.make_plan("usps", defence="pruning", pruning_radius=0.7).pruning_radius == 0.7
    assert "pruned at r = 0.2" in " ".join(rp.make_plan("pendigits", defence="pruning").deviations())
    with pytest.raises(ValueError, match="unknown defence"):
        rp.make_plan("splice", defence="smoothing")
    with pytest.raises(ValueError, match="set defence='pruning'"):
        rp.make_plan("splice", pruning_radius=0.2)
    with pytest.raises(ValueError, match="pruning_radius must be a positive"):
        rp.make_plan("splice", defence="pruning", pruning_radius=-1.0)
    assert cli_main(["reproduce", "--datasets", "splice", "--pruning-radius", "0.2", "--results-dir", str(tmp_path)]) == 2
    assert "set defence='pruning'" in capsys.readouterr().err


# ------------------------------------------------------------------ a rerun merges; the folder is replaced atomically
# On iris (built in, 30 test points, K = 11): every run takes well under a second.


def _toy_plan(methods=("euclidean", "lfda"), stages=rp.STAGES, **kw):
    from dataclasses import replace

    plan = rp.make_plan("iris", methods=methods, stages=stages, n_attack=10, grid=[0, 0.1, 0.2, 0.3])
    return replace(plan, n_test=30, **kw)


def _toy_run(tmp_path, plan, results="results", runs="runs"):
    return rp.reproduce_dataset("iris", plan, runs_dir=tmp_path / runs, results_dir=tmp_path / results, device="cpu")


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _lines_of(data: bytes, method: str) -> list[bytes]:
    return [line for line in data.splitlines() if line.split(b",")[0] == method.encode()]


def _radii_columns(folder, method):
    radii = pd.read_csv(folder / "radii.csv", dtype=str, keep_default_na=False)
    return radii[[c for c in radii.columns if c.startswith(method + ".")]]


@pytest.fixture()
def toy_full(tmp_path):
    meta = _toy_run(tmp_path, _toy_plan())
    assert meta["failures"] == [] and meta["violations"] == [] and meta["merge"]["previous"] == "none"
    return tmp_path, tmp_path / "results" / "iris", meta


def test_a_narrower_rerun_keeps_the_other_tables_and_rows_byte_for_byte(toy_full):
    tmp_path, d, meta = toy_full
    before = _files(d)
    assert set(before) == {"nn1_exact.csv", "knn11_certified.csv", "knn11_empirical.csv", "radii.csv",
                           "metrics_meta.json"}
    # fewer methods: LFDA's rows, columns, checks and entry stay as they were
    again = _toy_run(tmp_path, _toy_plan(methods=["euclidean"]))
    assert again["merge"]["kept"] == {"lfda": ["nn1", "knn11", "attack"]}
    after = _files(d)
    for name in ("nn1_exact.csv", "knn11_certified.csv", "knn11_empirical.csv", "radii.csv"):
        assert after[name] == before[name], name  # Euclidean came from the cache: the same bytes
    assert again["methods"]["lfda"] == meta["methods"]["lfda"]
    assert {k: v for k, v in again["checks"].items() if k.startswith("lfda/")} == \
        {k: v for k, v in meta["checks"].items() if k.startswith("lfda/")}
    assert list(again["methods"]) == ["euclidean", "lfda"] and again["plan"]["methods"] == ["euclidean", "lfda"]
    # fewer stages: the K = 11 tables are not touched
    again = _toy_run(tmp_path, _toy_plan(methods=["euclidean"], stages=["fit", "nn1"]))
    assert _files(d)["knn11_certified.csv"] == before["knn11_certified.csv"]
    assert _files(d)["knn11_empirical.csv"] == before["knn11_empirical.csv"]
    assert again["methods"]["euclidean"]["stage_s"] == meta["methods"]["euclidean"]["stage_s"]
    assert again["n_attack"] == 10 and again["checks"].keys() == meta["checks"].keys()
    # a method fitted again to another metric: its new rows replace its old ones, its stages not
    # recomputed are dropped (they describe the old metric), LFDA's stay byte for byte
    plan = _toy_plan(methods=["euclidean"], stages=["fit", "nn1"])
    settings = rp.fit_settings(plan, "euclidean")
    _, saved = cached_metric(tmp_path / "runs", "iris", "euclidean", settings, 4)
    store_metric(tmp_path / "runs", "iris", "euclidean", settings, np.diag([3.0, 0.2, 1.0, 0.1]), 0.0, saved["info"])
    changed = _toy_run(tmp_path, plan)
    new = _files(d)
    assert _lines_of(new["nn1_exact.csv"], "euclidean") != _lines_of(before["nn1_exact.csv"], "euclidean")
    for name in ("nn1_exact.csv", "knn11_certified.csv", "knn11_empirical.csv"):
        assert _lines_of(new[name], "lfda") == _lines_of(before[name], "lfda"), name
        assert new[name].splitlines()[0] == before[name].splitlines()[0]  # the header
    assert _lines_of(new["knn11_certified.csv"], "euclidean") == []
    assert sorted(changed["merge"]["dropped"]) == ["euclidean attack: the method was fitted again, to another metric",
                                                   "euclidean knn11: the method was fitted again, to another metric"]
    old_radii = pd.read_csv(io.BytesIO(before["radii.csv"]), dtype=str, keep_default_na=False)
    pd.testing.assert_frame_equal(_radii_columns(d, "lfda"), old_radii[list(_radii_columns(d, "lfda"))])
    assert "euclidean/knn11" not in changed["checks"] and "lfda/knn11" in changed["checks"]
    assert set(changed["methods"]["euclidean"]["stage_s"]) == {"fit", "nn1"}


def test_an_incompatible_previous_folder_is_replaced_and_said_so(toy_full):
    tmp_path, d, _ = toy_full
    meta = _toy_run(tmp_path, _toy_plan(methods=["euclidean"], stages=["fit", "nn1"], seed=7))
    assert meta["merge"]["previous"].startswith("replaced: it was computed with data_fingerprint")
    assert set(meta["methods"]) == {"euclidean"} and not (d / "knn11_certified.csv").exists()


@pytest.mark.parametrize("fail_at", ["knn11_certified.csv", "radii.csv", "metrics_meta.json", "rename"])
def test_an_interrupted_final_write_leaves_the_previous_folder_intact(toy_full, monkeypatch, fail_at):
    from arml_core.evaluation import results_folder as rf

    tmp_path, d, meta = toy_full
    before = _files(d)
    real_write, real_rename = rf._write_file, os.rename

    def write(path, text):
        if path.name == fail_at:
            real_write(path, text[: len(text) // 2])  # half the file, then the interruption
            raise KeyboardInterrupt
        real_write(path, text)

    def rename(src, dst):
        if Path(src).name == "new":  # the new folder into place, after the old one was renamed aside
            raise KeyboardInterrupt
        real_rename(src, dst)

    monkeypatch.setattr(rf, "_write_file", write)
    if fail_at == "rename":
        monkeypatch.setattr(rf.os, "rename", rename)
    # a rerun whose results differ (Euclidean refitted to another metric, LFDA not run)
    plan = _toy_plan(methods=["euclidean"], stages=["fit", "nn1"])
    settings = rp.fit_settings(plan, "euclidean")
    _, saved = cached_metric(tmp_path / "runs", "iris", "euclidean", settings, 4)
    store_metric(tmp_path / "runs", "iris", "euclidean", settings, np.diag([3.0, 0.2, 1.0, 0.1]), 0.0, saved["info"])
    with pytest.raises(KeyboardInterrupt):
        _toy_run(tmp_path, plan)
    assert _files(d) == before  # complete, and every file as it was
    assert [p.name for p in (tmp_path / "results").iterdir()] == ["iris"]  # nothing left beside it
    monkeypatch.undo()
    done = _toy_run(tmp_path, plan)  # the same rerun, uninterrupted
    assert done["merge"]["kept"] == {"lfda": ["nn1", "knn11", "attack"]}
    assert _lines_of(_files(d)["nn1_exact.csv"], "euclidean") != _lines_of(before["nn1_exact.csv"], "euclidean")


def test_a_swap_cut_between_its_two_renames_is_repaired_by_the_next_run(toy_full):
    """A process killed after renaming the old folder aside, before renaming the new one in:
    the new folder is complete (every file was written before the renames), so it is moved in."""
    import subprocess
    import sys

    tmp_path, d, meta = toy_full
    before = _files(d)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    tmp = tmp_path / "results" / f".iris.tmp-{dead}-abcd"
    tmp.mkdir()
    os.rename(d, tmp / "new")
    (tmp / "old").mkdir()
    (tmp / "old" / "nn1_exact.csv").write_text("stale")
    assert summary.results_datasets(tmp_path / "results") == []  # a reader sees no half-written data set
    meta2 = _toy_run(tmp_path, _toy_plan(methods=["euclidean"], stages=["fit", "nn1"]))
    assert meta2["merge"]["previous"] == "merged" and meta2["merge"]["kept"] == {
        "euclidean": ["knn11", "attack"], "lfda": ["nn1", "knn11", "attack"]}
    assert _files(d)["knn11_empirical.csv"] == before["knn11_empirical.csv"]
    assert [p.name for p in (tmp_path / "results").iterdir()] == ["iris"]


def _tampered(path, change):
    """``path`` (a cached metric) rewritten with its metadata changed: a dict of entries, or
    ``("raw", value)`` for metadata that is ``value`` as JSON."""
    import zipfile

    with zipfile.ZipFile(path) as z:
        G = np.load(io.BytesIO(z.read("components.npy")))
        meta = json.loads(str(np.load(io.BytesIO(z.read("metadata.npy")))))
    meta = change[1] if isinstance(change, tuple) else {**meta, **change}
    buf = io.BytesIO()
    np.savez(buf, components=G, metadata=np.array(json.dumps(meta)))
    path.write_bytes(buf.getvalue())


@pytest.mark.parametrize("change, reason", [
    (("raw", [1, 2, 3]), "list JSON, not an object"),
    ({"fit_time_s": "abc"}, "fit_time_s is 'abc'"),
    ({"fit_time_s": 10 ** 400}, "fit_time_s is 1000000000"),  # no float: OverflowError, not a traceback
    ({"fit_time_s": -1.0}, "fit_time_s is -1.0"),
    ({"info": "x"}, "info is str"),
    ({"dataset": "wine"}, "dataset 'wine'"),
    ({"params": {"protocol": "paper", "n_train": 5, "seed": 42}}, "params"),
    ({"format_version": 99}, "format_version 99"),
])
def test_a_tampered_cached_metric_warns_and_is_recomputed(tmp_path, change, reason):
    plan = _toy_plan(methods=["euclidean"], stages=["fit", "nn1"])
    first = _toy_run(tmp_path, plan)
    key = first["methods"]["euclidean"]["fit_key"]
    _tampered(tmp_path / "runs" / f"{key}.npz", change)
    with pytest.warns(UserWarning, match=f"ignoring the saved run {key}.npz .*{reason}"):
        meta = _toy_run(tmp_path, plan)
    e = meta["methods"]["euclidean"]
    assert e["cached"]["fit"] is False and reason.split()[0] in e["cache_warnings"][0]
    assert e["fingerprints"] == first["methods"]["euclidean"]["fingerprints"]  # the identity, fitted again
    assert cached_metric(tmp_path / "runs", "iris", "euclidean", rp.fit_settings(plan, "euclidean"), 4) is not None


def test_an_lfda_metric_copied_under_armls_key_is_not_used_as_arml(tmp_path):
    import shutil

    plan = _toy_plan(methods=["lfda", "arml"], stages=["fit", "nn1"], params={"arml": {"n_epochs": 3}})
    first = _toy_run(tmp_path, plan)
    lfda, arml = (first["methods"][m]["fit_key"] for m in ("lfda", "arml"))
    for ext in (".npz", ".json"):
        shutil.copy(tmp_path / "runs" / f"{lfda}{ext}", tmp_path / "runs" / f"{arml}{ext}")
    with pytest.warns(UserWarning, match=f"ignoring the saved run {arml}.npz .*method 'lfda'"):
        meta = _toy_run(tmp_path, plan)
    a = meta["methods"]["arml"]
    assert a["cached"]["fit"] is False
    assert a["fingerprints"] != meta["methods"]["lfda"]["fingerprints"]
    assert a["fingerprints"] == first["methods"]["arml"]["fingerprints"]  # ARML again (seeded), not LFDA


def test_a_damaged_stage_file_with_the_right_stamps_is_recomputed(tmp_path):
    """A stage file is read with persistence.read_npz and checked (names, shapes, dtypes), not trusted."""
    plan = _toy_plan(methods=["euclidean"], stages=["fit", "nn1"])
    first = _toy_run(tmp_path, plan)
    (path,) = (tmp_path / "runs").glob("*__nn1__*.npz")
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    good = pd.read_csv(tmp_path / "results" / "iris" / "radii.csv")["euclidean.nn1_exact"]
    for bad in ({**arrays, "verified": arrays["verified"].astype(float)},  # ~ of a float: TypeError
                {**arrays, "exact": arrays["exact"][:3]},  # too short
                {k: v for k, v in arrays.items() if k != "bound"},  # missing
                {**arrays, "_seconds": np.float64(np.nan)},
                {**arrays, "exact": np.array([{"a": 1}] * 30, dtype=object)}):  # a pickle
        np.savez(path, **bad)
        meta = _toy_run(tmp_path, plan)
        assert meta["methods"]["euclidean"]["cached"]["nn1"] is False
        np.testing.assert_array_equal(pd.read_csv(tmp_path / "results" / "iris" / "radii.csv")["euclidean.nn1_exact"],
                                      good)
    assert first["methods"]["euclidean"]["cached"]["nn1"] is False


def test_a_rerun_after_a_failure_keeps_the_earlier_rows_and_says_so(toy_full, monkeypatch):
    import arml_core.evaluation.reproduce as mod

    tmp_path, d, meta = toy_full
    before = _files(d)
    real = mod.fit_metric
    monkeypatch.setattr(mod, "fit_metric", lambda ds, method, **kw: (_ for _ in ()).throw(ValueError("diverged"))
                        if method == "lfda" else real(ds, method, **kw))
    (tmp_path / "runs" / f"{meta['methods']['lfda']['fit_key']}.npz").unlink()  # so LFDA must be fitted
    again = _toy_run(tmp_path, _toy_plan())
    assert again["failures"] == ["LFDA: fit failed (ValueError: diverged) (the nn1, knn11, attack results of an "
                                 "earlier run are kept)"]
    assert again["merge"]["run_failures"] == ["LFDA: fit failed (ValueError: diverged)"]
    for name in ("nn1_exact.csv", "knn11_certified.csv", "knn11_empirical.csv"):
        assert _lines_of(_files(d)[name], "lfda") == _lines_of(before[name], "lfda")
    # and a later successful run of the others leaves the failure recorded where it belongs
    monkeypatch.undo()
    later = _toy_run(tmp_path, _toy_plan(methods=["euclidean"]))
    assert later["merge"]["run_failures"] == [] and len(later["failures"]) == 1


def test_a_malformed_previous_metadata_is_replaced_not_a_traceback(toy_full):
    tmp_path, d, _ = toy_full
    for text in ("[1, 2]", '{"methods": [1]}', '{"methods": {"lfda": {"stage_s": 3}}}', "{not json",
                 '{"methods": {}, "plan": "x"}'):
        (d / "metrics_meta.json").write_text(text)
        meta = _toy_run(tmp_path, _toy_plan(methods=["euclidean"], stages=["fit", "nn1"]))
        assert meta["merge"]["previous"].startswith("replaced: it could not be read"), text
        assert set(meta["methods"]) == {"euclidean"}


def test_rows_beyond_the_protocol_are_kept_by_a_rerun_without_them_and_dropped_with_their_metric(tmp_path):
    first = _toy_run(tmp_path, _toy_plan(stages=["fit", "nn1"], pruning_radius=0.05))
    assert first["failures"] == [] and list(first["methods"]) == ["euclidean", "euclidean+pruning", "lfda",
                                                                 "lfda+pruning"]
    d = tmp_path / "results" / "iris"
    before = _files(d)
    plain = _toy_run(tmp_path, _toy_plan(methods=["lfda"], stages=["fit", "nn1"]))  # no defence now
    assert _files(d)["nn1_exact.csv"] == before["nn1_exact.csv"]
    assert plain["plan"]["pruning_radius"] == 0.05 and any("pruned at r = 0.05" in x for x in plain["deviations"])
    assert "lfda+pruning" in summary.summary_markdown(tmp_path / "results").replace(" + ", "+").lower()
    # LFDA fitted again to another metric: its pruned rows (of the old metric) go, Euclidean's stay
    plan = _toy_plan(methods=["lfda"], stages=["fit", "nn1"])
    settings = rp.fit_settings(plan, "lfda")
    _, saved = cached_metric(tmp_path / "runs", "iris", "lfda", settings, 4)
    store_metric(tmp_path / "runs", "iris", "lfda", settings, np.diag([3.0, 0.2, 1.0, 0.1]), 0.0, saved["info"])
    meta = _toy_run(tmp_path, plan)
    assert meta["merge"]["dropped"] == ["lfda+pruning nn1: lfda was fitted again, to another metric"]
    assert list(meta["methods"]) == ["euclidean", "euclidean+pruning", "lfda"]
    assert _lines_of(_files(d)["nn1_exact.csv"], "euclidean+pruning") == _lines_of(before["nn1_exact.csv"],
                                                                                   "euclidean+pruning")
