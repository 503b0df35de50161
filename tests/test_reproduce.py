"""The paper reproduction: plans, caching/resume, results files, the summary, and the
Euclidean 1-NN rows on pendigits against an independent brute force."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import nnls

from arml_core.evaluation import reproduce as rp
from arml_core.evaluation import summary
from arml_core.cli import main as cli_main
from arml_core.data import load_dataset
from arml_core.knn import MahalanobisKNN
from arml_core.persistence import cached_metric, run_key


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


def test_a_partial_rerun_leaves_no_stale_table(splice_run, shared_data_dir, tmp_path):
    root, _ = splice_run
    plan = rp.make_plan("splice", methods=["euclidean"], n_attack=40)
    rp.reproduce_dataset("splice", plan, data_dir=shared_data_dir, runs_dir=root / "runs",
                         results_dir=tmp_path / "r", device="cpu")
    assert (tmp_path / "r" / "splice" / "knn11_empirical.csv").exists()
    plan = rp.make_plan("splice", methods=["euclidean"], stages=["fit", "nn1"])
    meta = rp.reproduce_dataset("splice", plan, data_dir=shared_data_dir, runs_dir=root / "runs",
                                results_dir=tmp_path / "r", device="cpu")
    assert not (tmp_path / "r" / "splice" / "knn11_empirical.csv").exists()
    assert not (tmp_path / "r" / "splice" / "knn11_certified.csv").exists()
    assert not any("Boundary Attack" in d for d in meta["deviations"])  # no attack, no attack deviation


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
