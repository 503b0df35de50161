"""UI state shared by every page: the sidebar selection (mirrored in the URL), the
loaded data set and the trained metrics (session state + runs/ on disk).

UI glue only; all computation is in ``arml_core``.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st

from arml_core import data
from arml_core.device import device_label
from arml_core.evaluation import fit_metric, radii_for
from arml_core.evaluation.gap import ExactKNNPlan, exact_knn_radii
from arml_core.knn import MahalanobisKNN
from arml_core.metric import metric_from_components
from arml_core.learners import LEARNERS
from arml_core.learners.registry import variant_key
from arml_core.plots import display_name, pruned_key
from arml_core.persistence import cached_metric, run_key, store_metric
from arml_core.pruning import adversarial_pruning

RUNS_DIR = None  # None: $ARML_RUNS_DIR (default runs/), read when used, so a test can point it elsewhere


def runs_dir() -> str:
    return RUNS_DIR if RUNS_DIR is not None else os.environ.get("ARML_RUNS_DIR", "runs")
MAX_UPLOAD_MB = 50
DEFAULTS = {"dataset": "figure1", "n_train": 0, "n_test": 200, "seed": 42,
            "methods": ["euclidean", "arml"], "K": 1}
ARML_DEFAULTS = {"n_epochs": 300, "learning_rate": 1e-2, "n_candidates": 10, "loss": "neg"}
UPLOAD_PREFIX = "upload:"


# -- selection state ------------------------------------------------------------------------
def _from_query(q) -> tuple[dict, list[str]]:
    """The selection a URL asks for, and a notice for each parameter that was ignored or
    corrected (a hostile or stale link falls back to the defaults for what it got wrong)."""
    sel, notices = dict(DEFAULTS), []
    if "dataset" in q:
        sel["dataset"] = str(q["dataset"])[:200]
    for k in ("n_train", "n_test", "seed", "K"):
        if k in q:
            try:
                v = int(q[k])
            except (ValueError, TypeError, OverflowError):
                notices.append(f"{k}={str(q[k])[:40]!r} is not a whole number: using {DEFAULTS[k]}.")
                continue
            lo = 1 if k == "K" else 0
            if v < lo or v > 10**7:
                fixed = min(max(v, lo), 10**7)
                notices.append(f"{k}={v} is out of range: using {fixed}.")
                v = fixed
            sel[k] = v
    if "methods" in q:
        asked = [m.strip().lower() for m in str(q["methods"]).split(",") if m.strip()]
        unknown = [m for m in asked if m not in LEARNERS]
        sel["methods"] = list(dict.fromkeys(m for m in asked if m in LEARNERS))  # no duplicates
        if unknown:
            notices.append(f"unknown method(s) {', '.join(repr(m[:30]) for m in unknown[:5])} ignored.")
    if "prune" in q:
        sel["prune"] = parse_prune(q["prune"])
    return sel, notices


def parse_prune(text: str) -> dict[str, float]:
    """``"arml:0.1,euclidean:0.05"`` -> {method: pruning radius}; bad entries are dropped."""
    out = {}
    for item in str(text).split(","):
        method, _, r = item.partition(":")
        try:
            value = float(r)
        except ValueError:
            continue
        if method in LEARNERS and np.isfinite(value) and value > 0:
            out[method] = value
    return out


def init_state() -> dict:
    ss = st.session_state
    if "sel" not in ss:
        ss["sel"], ss["url_notices"] = _from_query(st.query_params)
        ss["from_link"] = "methods" in st.query_params  # a copied link: recompute what it shows
        ss["arml_params"] = dict(ARML_DEFAULTS)
        ss["metrics"] = {}
        ss["upload"] = None
        ss["uploaded_metrics"] = {}  # this session's uploaded metrics: never in runs/
    return ss["sel"]


@dataclass
class Page:
    """What a page draws from: the selection, the data set, K and the trained metrics."""

    sel: dict
    ds: data.Dataset
    K: int
    recs: dict

    @property
    def class_names(self) -> list[str]:
        return [str(c) for c in self.ds.classes]


@functools.cache
def _explainers() -> dict:
    with open(Path(__file__).with_name("explainers.toml"), "rb") as fh:
        return tomllib.load(fh)


def open_page(title: str, explainer: str, *, need_trained: bool = True, check_k: bool = True,
              pruned: bool = True) -> Page:
    """The top of every data page: title, the explainer ``explainer`` of explainers.toml,
    the selected data set (or a clear error) and, with ``need_trained``, the trained
    metrics (or a way to train them), with ``pruned`` their pruned variants too."""
    sel = selection()
    st.title(title)
    e = _explainers()[explainer]
    explain(e["topic"], e["latex"], e["text"])
    ds = current_dataset(sel, check_k=check_k)
    recs = require_trained(ds, sel) if need_trained else {}
    if pruned and recs:
        recs = with_pruning(ds, sel, recs, int(sel["K"]))
    return Page(sel, ds, int(sel["K"]), recs)


def selection() -> dict:
    """The shared selection (the sidebar, drawn by app.py, keeps it up to date)."""
    return init_state()


def _copy(widget_key: str, field: str):
    def cb():
        st.session_state["sel"][field] = st.session_state[widget_key]
    return cb


def sidebar() -> dict:
    """Render the shared sidebar; returns the selection (also written to the URL)."""
    sel = init_state()
    ss = st.session_state
    sb = st.sidebar
    sb.title("ARML Explorer")
    for note in ss.get("url_notices") or []:
        sb.info(f"From the link: {note}")
    names = data.available_datasets()
    if ss["upload"] is not None:
        names = names + [UPLOAD_PREFIX + ss["upload"][0]]
    if sel["dataset"] not in names:
        if sel["dataset"] != DEFAULTS["dataset"]:
            sb.warning(f"Data set {sel['dataset']!r} is not available here; showing {DEFAULTS['dataset']}.")
        sel["dataset"] = DEFAULTS["dataset"]
    ss["w_dataset"] = sel["dataset"]
    sb.selectbox("Data set", names, key="w_dataset", on_change=_copy("w_dataset", "dataset"))
    with sb.expander("Upload a CSV or LIBSVM file"):
        up = st.file_uploader("Label in the last column (CSV) or LIBSVM format", type=None, key="w_upload")
        if up is not None and (ss["upload"] is None or ss["upload"][0] != up.name):
            if up.size > MAX_UPLOAD_MB * 2**20:
                st.error(f"{up.name} is {up.size / 2**20:.0f} MB; the limit is {MAX_UPLOAD_MB} MB.")
            else:
                ss["upload"] = (up.name, up.getvalue())
                sel["dataset"] = UPLOAD_PREFIX + up.name
                st.rerun()
    c1, c2 = sb.columns(2)
    for col, label, field, step in ((c1, "Train points (0 = all)", "n_train", 100),
                                    (c2, "Test points (0 = all)", "n_test", 100)):
        ss[f"w_{field}"] = int(sel[field])
        col.number_input(label, min_value=0, step=step, key=f"w_{field}", on_change=_copy(f"w_{field}", field))
    ss["w_seed"] = int(sel["seed"])
    sb.number_input("Seed", min_value=0, step=1, key="w_seed", on_change=_copy("w_seed", "seed"))
    ss["w_methods"] = [m for m in sel["methods"] if m in LEARNERS]
    sb.multiselect("Methods", list(LEARNERS), key="w_methods", format_func=display_name,
                   on_change=_copy("w_methods", "methods"))
    ss["w_K"] = int(sel["K"])
    sb.number_input("K (odd)", min_value=1, step=2, key="w_K", on_change=_copy("w_K", "K"))
    sb.caption(f"Device: **{device_label('auto')}**")
    query = {"dataset": sel["dataset"], "n_train": sel["n_train"], "n_test": sel["n_test"],
             "seed": sel["seed"], "methods": ",".join(sel["methods"]), "K": sel["K"]}
    if sel.get("prune"):
        query["prune"] = ",".join(f"{m}:{r:g}" for m, r in sel["prune"].items())
    elif "prune" in st.query_params:
        del st.query_params["prune"]
    for k, v in query.items():  # set one by one: the pages' widgets bound to the URL keep theirs
        if st.query_params.get(k) != str(v):
            st.query_params[k] = str(v)
    return sel


# -- data -------------------------------------------------------------------------------------
@st.cache_data(show_spinner="Loading the data set…", max_entries=8)
def _load_named(name: str, n_train, n_test, seed: int) -> data.Dataset:
    return data.load_dataset(name, n_train=n_train, n_test=n_test, seed=seed)


@st.cache_data(show_spinner="Reading the uploaded file…", max_entries=4)
def _load_upload(filename: str, payload: bytes, n_train, n_test, seed: int) -> data.Dataset:
    import io

    buf = io.BytesIO(payload)
    buf.name = filename
    return data.load_file(buf, n_train=n_train, n_test=n_test, seed=seed, name=filename)


def _fingerprint(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:10]


def train_key(ds: data.Dataset, sel: dict) -> str:
    """What a trained metric depends on: the training set (its name, size, seed and a
    fingerprint of its arrays), not the test set, so changing the test size reuses it."""
    return f"{ds.name}-tr{sel['n_train']}-s{sel['seed']}-{_fingerprint(ds.X_train, ds.y_train)}"


def dataset_key(ds: data.Dataset, sel: dict) -> str:
    """The key of computations on the test points too (radii, attacks): training and test set."""
    return f"{train_key(ds, sel)}-te{len(ds.y_test)}-{_fingerprint(ds.X_test, ds.y_test)}"


def current_dataset(sel: dict, *, check_k: bool = True) -> data.Dataset:
    """The selected data set, or a clear error and a stop."""
    try:
        n_train, n_test, seed = sel["n_train"] or None, sel["n_test"] or None, int(sel["seed"])
        if sel["dataset"].startswith(UPLOAD_PREFIX):
            name, payload = st.session_state["upload"]
            ds = _load_upload(name, payload, n_train, n_test, seed)
        else:
            ds = _load_named(sel["dataset"], n_train, n_test, seed)
        if check_k:
            data.validate_for_k(ds, int(sel["K"]))
    except (ValueError, OSError) as exc:
        st.error(str(exc))
        st.stop()
    return ds


# -- metrics ----------------------------------------------------------------------------------
def method_settings(method: str, sel: dict) -> dict:
    base = {"n_train": int(sel["n_train"]), "seed": int(sel["seed"])}
    if method == "arml":
        base.update(st.session_state["arml_params"])
    return base


def fit_params(method: str, sel: dict) -> dict:
    """The learner parameters of one fit in the app."""
    if method == "arml":
        return {**st.session_state["arml_params"], "random_state": int(sel["seed"])}
    return {}


def metric_key(ds, sel, method: str) -> tuple:
    return (train_key(ds, sel), method, run_key(ds.name, method, method_settings(method, sel)))


def _is_upload(sel) -> bool:
    return sel["dataset"].startswith(UPLOAD_PREFIX)


def get_metric(ds: data.Dataset, sel: dict, method: str):
    """A trained metric record {G, fit_time, info, source} from memory or runs/, or None.
    Euclidean needs no training: it is always there."""
    key = metric_key(ds, sel, method)
    rec = st.session_state["metrics"].get(key)
    if rec is None and method == "euclidean":
        rec = put_identity(ds, sel)
    if rec is None and not _is_upload(sel):
        import warnings

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            hit = cached_metric(runs_dir(), train_key(ds, sel), method, method_settings(method, sel), ds.n_features)
        for w in caught:
            st.warning(str(w.message))
        if hit is not None:
            G, meta = hit
            rec = {"G": G, "fit_time": float(meta.get("fit_time_s") or 0.0), "info": meta.get("info", {}),
                   "source": "runs/", "settings": method_settings(method, sel)}
            st.session_state["metrics"][key] = rec
    return rec


def put_identity(ds, sel) -> dict:
    rec = {"G": np.eye(ds.n_features), "fit_time": 0.0, "info": {}, "source": "no training needed"}
    st.session_state["metrics"][metric_key(ds, sel, "euclidean")] = rec
    return rec


def store_run(ds_key: str, method: str, settings: dict, G, fit_time, info) -> None:
    """Save a trained metric to runs/ under ``ds_key`` (``dataset_key``) and ``settings``
    (``method_settings``). Called from the training thread: no Streamlit calls."""
    try:
        store_metric(runs_dir(), ds_key, method, settings, G, fit_time, {k: v for k, v in info.items()})
    except OSError:
        pass  # the metric stays in the session; the disk cache is a convenience


def put_upload(ds, name: str, G) -> str:
    """An uploaded metric: this session's only, labelled as an upload everywhere, never in
    runs/ and never under a trained method's key. Returns its entry key."""
    key = f"{UPLOAD_PREFIX}{name}"
    st.session_state["uploaded_metrics"][key] = {"G": G, "fit_time": 0.0, "info": {"loaded_from": name},
                                                 "source": f"uploaded {name} (this session only)",
                                                 "n_features": int(G.shape[1]), "dataset": ds.name}
    return key


def uploads_for(ds) -> dict:
    return {k: rec for k, rec in st.session_state.get("uploaded_metrics", {}).items()
            if rec["n_features"] == ds.n_features and rec["dataset"] == ds.name}


def train(ds, sel, methods) -> None:
    """Start fitting ``methods`` in the background and follow it here until it ends."""
    from app_pages import _training

    _training.start(ds, sel, methods)
    _training.follow()


def trained(ds, sel, methods=None) -> dict:
    """The selected methods' metrics that exist, then this session's uploaded metrics."""
    methods = sel["methods"] if methods is None else methods
    recs = {m: rec for m in dict.fromkeys(methods) if (rec := get_metric(ds, sel, m)) is not None}
    return {**recs, **other_runs(ds, sel, methods), **uploads_for(ds)}


def other_runs(ds, sel, methods) -> dict:
    """This session's earlier runs of a selected method with other settings (ARML with other
    epochs or learning rate), as separate named entries beside the current one."""
    if not st.session_state.get("show_other_runs", True):
        return {}
    tkey, out = train_key(ds, sel), {}
    for (k, method, rkey), rec in list(st.session_state["metrics"].items()):
        if k == tkey and method in methods and rkey != metric_key(ds, sel, method)[2] and rec.get("settings"):
            out[variant_key(method, rec["settings"])] = rec
    return out


def require_trained(ds, sel) -> dict:
    from app_pages import _training

    if not sel["methods"] and not uploads_for(ds):
        st.info("Select at least one method in the sidebar.")
        st.stop()
    recs = trained(ds, sel)
    missing = [m for m in sel["methods"] if m not in recs]
    _training.maybe_auto_train(ds, sel, missing)
    if not recs:
        if _training.running():
            _training.follow()
        st.info("No trained metric for this selection yet: train on the **Train & compare** page.")
        if st.button(_training.button_label(ds, sel, sel["methods"]), key="train_here"):
            train(ds, sel, sel["methods"])
        st.stop()
    if missing and not _training.running():
        st.caption(f"Not trained yet (see Train & compare): {', '.join(display_name(m) for m in missing)}")
    return recs


# -- adversarial pruning (a data-side defence) ---------------------------------------------------
@st.cache_data(show_spinner="Pruning the training set…", max_entries=32)
def _kept_cached(_ds: data.Dataset, ds_key: str, G_bytes: bytes, G_shape, r: float):
    G = np.frombuffer(G_bytes).reshape(G_shape)
    return adversarial_pruning(_ds.X_train, _ds.y_train, metric_from_components(G), r, return_result=True)


def with_pruning(ds, sel, recs: dict, K: int) -> dict:
    """``recs`` and, for every method with a pruning radius (``sel['prune']``), its pruned
    variant: the same metric, K-NN on the training points adversarial pruning keeps."""
    out = dict(recs)
    for m, r in sel.get("prune", {}).items():
        if m not in recs:
            continue
        G = np.ascontiguousarray(recs[m]["G"], dtype=np.float64)
        res = _kept_cached(ds, train_key(ds, sel), G.tobytes(), G.shape, float(r))
        view = training_view(ds, {"kept": res.kept})
        try:
            data.validate_for_k(view, K)
        except ValueError as exc:
            st.warning(f"{display_name(pruned_key(m, r))}: the pruned training set cannot be used with K = {K} "
                       f"({exc}); lower the pruning radius.")
            continue
        out[pruned_key(m, r)] = {**recs[m], "kept": res.kept, "pruning": res, "base": m}
    return out


def training_view(ds: data.Dataset, rec: dict) -> data.Dataset:
    """The data set a record's K-NN uses: all training points, or those pruning kept."""
    kept = rec.get("kept")
    if kept is None:
        return ds
    return dataclasses.replace(ds, X_train=ds.X_train[kept], y_train=ds.y_train[kept])


# -- cached computations ------------------------------------------------------------------------
@st.cache_data(show_spinner=False, max_entries=64)
def radii_cached(_ds: data.Dataset, ds_key: str, method: str, G_bytes: bytes, G_shape, K: int):
    G = np.frombuffer(G_bytes).reshape(G_shape)
    return radii_for(_ds, metric_from_components(G), K)


def radii(ds, sel, method, rec, K):
    G = np.ascontiguousarray(rec["G"], dtype=np.float64)
    return radii_cached(training_view(ds, rec), dataset_key(ds, sel), method, G.tobytes(), G.shape, int(K))


@st.cache_data(show_spinner=False, max_entries=32)
def attack_norms_cached(_ds: data.Dataset, ds_key: str, method: str, G_bytes: bytes, G_shape, K: int,
                        attack_method: str):
    from arml_core.robustness import attack

    G = np.frombuffer(G_bytes).reshape(G_shape)
    res = attack(_ds.X_train, _ds.y_train, _ds.X_test, _ds.y_test, metric_from_components(G), K,
                 method=attack_method)
    return np.asarray(res.norms, dtype=float)


def attack_norms(ds, sel, method, rec, K, attack_method="region"):
    G = np.ascontiguousarray(rec["G"], dtype=np.float64)
    return attack_norms_cached(training_view(ds, rec), dataset_key(ds, sel), method, G.tobytes(), G.shape, int(K),
                               attack_method)


@st.cache_data(show_spinner=False, max_entries=32)
def exact_knn_cached(_ds: data.Dataset, ds_key: str, method: str, G_bytes: bytes, G_shape, K: int,
                     max_qp: int, max_seconds: float, _progress=None):
    G = np.frombuffer(G_bytes).reshape(G_shape)
    plan = ExactKNNPlan(True, True, max_qp, max_seconds, max_seconds * len(_ds.y_test), "")
    return exact_knn_radii(_ds, metric_from_components(G), K, plan=plan, progress=_progress)


def exact_knn(ds, sel, method, rec, K, plan: ExactKNNPlan, progress=None):
    """Exact K-NN radii (K > 1) of the test points under the work limits of ``plan``: an
    ExactKNNResult (``lower``/``upper``/``proven``), cached like the other radii."""
    G = np.ascontiguousarray(rec["G"], dtype=np.float64)
    return exact_knn_cached(training_view(ds, rec), dataset_key(ds, sel), method, G.tobytes(), G.shape, int(K),
                            int(plan.max_qp), float(plan.max_seconds_per_point), _progress=progress)


def knn_for(ds, rec, K) -> MahalanobisKNN:
    view = training_view(ds, rec)
    return MahalanobisKNN(metric_from_components(rec["G"]), n_neighbors=int(K)).fit(view.X_train, view.y_train)


def explain(title: str, latex: str, text: str) -> None:
    with st.expander(f"What am I looking at? — {title}"):
        st.latex(latex)
        st.write(text)

