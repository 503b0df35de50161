"""One data set's results folder, ``results/<dataset>/``: a rerun merges into it, and it is replaced atomically.

A run of :func:`arml_core.evaluation.reproduce.reproduce_dataset` produces *units*, one per
method and evaluation stage: rows of a table, per-point columns of ``radii.csv``, a
soundness check and the stage's entries in the method's metadata (:data:`LAYOUT` says which).
:func:`save_results` merges them with the folder already there:

* a unit this run did not recompute (another method, a stage not requested, or one that
  failed now) stays as it was, its CSV cells byte for byte;
* except where it no longer describes the method: the method was fitted again to another
  metric (its fingerprints differ), or the run attacked another number of points; such a
  unit is dropped and ``meta['merge']['dropped']`` says why;
* a folder of another data set, test set, K or grid cannot be merged: it is replaced, and
  ``meta['merge']['previous']`` says so.

The deviations, the failures and the soundness violations are derived from the merged
units, so they describe every row in the folder. The folder is written beside
(``results/.<dataset>.tmp-<pid>-XXXX/new``), then the old one is renamed aside and the new
one into its place; an interruption before the renames leaves the old folder as it was, one
between them is repaired by the next run (:func:`recover`). To drop a method's rows, delete
the folder and rerun.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from ..learners import LEARNERS
from .plan import STAGES, Plan


@dataclass(frozen=True)
class StageLayout:
    """Where one evaluation stage's unit lives (``{K}``: the plan's K).

    ``table``: its CSV; ``columns``: its columns of ``radii.csv`` (``<method>.<column>``);
    ``time_key`` / ``cached_key``: its entries of the method's ``stage_s`` / ``cached``;
    ``check``: its entry of ``checks`` (``<method>/<check>``); ``extra``: other entries of
    the method's metadata that it writes."""

    table: str
    columns: tuple
    time_key: str
    cached_key: str
    check: str | None = None
    extra: tuple = ()


LAYOUT = {
    "nn1": StageLayout("nn1_exact.csv", ("nn1_exact", "nn1_bound"), "nn1", "nn1", "nn1", ("nn1_ties",)),
    "knn11": StageLayout("knn{K}_certified.csv", ("knn{K}_certified",), "knn{K}_certified", "knn{K}"),
    "attack": StageLayout("knn{K}_empirical.csv", ("knn{K}_empirical",), "knn{K}_attack", "attack", "knn{K}"),
}
TABLE_FLOAT_FORMAT, RADII_FLOAT_FORMAT = "%.6g", "%.8g"


@dataclass
class RunOutput:
    """What one run produced: ``meta`` (run-level entries, ``methods``, ``checks``),
    ``rows`` (stage -> table rows), ``per_point`` (radii.csv columns, 'label' first) and
    ``done`` (method -> the stages it computed in this run)."""

    plan: Plan
    meta: dict
    rows: dict
    per_point: dict
    done: dict


def violation_messages(checks: dict, K: int) -> list[str]:
    """The soundness violations (bugs) recorded in ``checks``, in words."""
    out = []
    for key, c in checks.items():
        method, _, stage = key.rpartition("/")
        if stage == "nn1" and (c.get("unverified_perturbations") or c.get("bound_above_exact")):
            out.append(f"{method} 1-NN: {c['unverified_perturbations']} exact perturbations failed verification, "
                       f"{c['bound_above_exact']} closed-form bounds above the exact radius")
        elif stage == f"knn{K}":
            if c.get("certified_above_attack"):
                out.append(f"{method} {K}-NN: certified radius above the attack norm at "
                           f"{c['certified_above_attack']} points")
            if c.get("attack_zero_not_misclassified"):
                out.append(f"{method} {K}-NN: at r = 0 the attack disagrees with the clean error at "
                           f"{c['attack_zero_not_misclassified']} points")
    return out


# --------------------------------------------------------------------------- the previous folder


@dataclass
class _Folder:
    """A results folder as text: the metadata, and every CSV as a frame of strings."""

    meta: dict
    tables: dict  # stage -> DataFrame of str (absent: no such file)
    radii: pd.DataFrame | None


def _as_text(df: pd.DataFrame, **to_csv) -> pd.DataFrame:
    """``df`` as the strings ``to_csv`` writes for it (so merged cells are written unchanged)."""
    return _read_text(io.StringIO(df.to_csv(**to_csv)))


def _read_text(source) -> pd.DataFrame:
    return pd.read_csv(source, dtype=str, keep_default_na=False)


def _read_previous(out_dir: Path, K: int) -> tuple[_Folder | None, str]:
    """The folder there (None and why not, when there is none or it cannot be read)."""
    meta_path = out_dir / "metrics_meta.json"
    if not meta_path.exists():
        return None, "none" if not out_dir.exists() else "replaced: it had no metrics_meta.json"
    try:
        meta = json.loads(meta_path.read_text())
        _check_meta(meta)
        tables = {}
        for stage, lay in LAYOUT.items():
            p = out_dir / lay.table.format(K=K)
            if p.exists():
                tables[stage] = _read_text(p)
                if "method" not in tables[stage]:
                    raise ValueError(f"{p.name} has no method column")
        radii = _read_text(out_dir / "radii.csv") if (out_dir / "radii.csv").exists() else None
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        return None, f"replaced: it could not be read ({str(exc)[:200]})"
    return _Folder(meta, tables, radii), "merged"


def _check_meta(meta) -> None:
    """A ValueError unless ``meta`` has the shape :func:`save_results` writes (as far as a merge reads it)."""
    def is_dict_of_dicts(v):
        return isinstance(v, dict) and all(isinstance(x, dict) for x in v.values())

    if not isinstance(meta, dict) or not is_dict_of_dicts(meta.get("methods")):
        raise ValueError("its metrics_meta.json is not a results description")
    for e in meta["methods"].values():
        if not all(isinstance(e.get(k, {}), dict) for k in ("stage_s", "cached")) or \
                not isinstance(e.get("failures", []), list):
            raise ValueError("a method's entry in its metrics_meta.json is malformed")
    if not is_dict_of_dicts(meta.get("checks", {})) or not isinstance(meta.get("plan", {}), dict) or \
            not isinstance(meta.get("failures", []), list):
        raise ValueError("its metrics_meta.json is not a results description")


def _incompatible(prev: _Folder, new: dict, radii: pd.DataFrame) -> str | None:
    """Why the previous folder's rows cannot stand beside this run's (None: they can)."""
    for key in ("dataset", "data_fingerprint", "K", "n_test"):
        if prev.meta.get(key) != new.get(key):
            return f"it was computed with {key} {prev.meta.get(key)!r}, this run with {new.get(key)!r}"
    grid = prev.meta.get("grid")
    if not isinstance(grid, list) or len(grid) != len(new["grid"]) or \
            not all(isinstance(g, (int, float)) and abs(g - h) <= 1e-12 for g, h in zip(grid, new["grid"])):
        return f"it was computed on the radii {grid!r}, this run on {new['grid']!r}"
    if prev.radii is None or "label" not in prev.radii or not prev.radii["label"].equals(radii["label"]):
        return "its radii.csv is missing or lists other test points"
    return None


def _same_fit(a: dict, b: dict) -> bool:
    """Whether two metadata entries of a method describe the same metric (and training data)."""
    if "fingerprints" in a and "fingerprints" in b:
        return a["fingerprints"] == b["fingerprints"]

    def ident(e):  # results written before fingerprints were recorded: the cache key, the fit and its time
        return json.dumps([e.get("fit_key"), e.get("fit_info"), e.get("stage_s", {}).get("fit"), e.get("pruning")],
                          sort_keys=True, default=str)
    return ident(a) == ident(b)


def _stage_keys(lay: StageLayout, K: int) -> tuple[str, str]:
    return lay.time_key.format(K=K), lay.cached_key.format(K=K)


# --------------------------------------------------------------------------- the merge


def _order(old: list, new: list) -> list:
    """The previous folder's method order, each new method after the last of its family ('lfda', 'lfda+pruning')."""
    order = list(old)
    for m in new:
        if m not in order:
            family = [i for i, x in enumerate(order) if x.partition("+")[0] == m.partition("+")[0]]
            order.insert(family[-1] + 1 if family else len(order), m)
    return order


def _merge(new: RunOutput, prev: _Folder | None, status: str) -> tuple[dict, dict, pd.DataFrame]:
    """(meta, stage -> table of str, radii.csv of str) of the merged folder."""
    plan, meta, K = new.plan, new.meta, new.plan.n_neighbors
    new_tables = {s: _as_text(pd.DataFrame(rows), index=False, float_format=TABLE_FLOAT_FORMAT)
                  for s, rows in new.rows.items() if rows}
    new_radii = _as_text(pd.DataFrame(new.per_point), index_label="test_index", float_format=RADII_FLOAT_FORMAT)
    if prev is not None and (reason := _incompatible(prev, meta, new_radii)):
        prev, status = None, f"replaced: {reason}"
    pmeta = prev.meta if prev else {}
    pm = pmeta.get("methods", {})
    n_attack = meta["n_attack"] if "attack" in plan.stages else pmeta.get("n_attack", 0)
    fresh = {m for m, e in meta["methods"].items() if "fingerprints" in e}  # fitted (or pruned) in this run
    changed = {m for m in fresh if m in pm and not _same_fit(pm[m], meta["methods"][m])}

    source, dropped, kept, methods_meta = {}, [], {}, {}
    for m in _order(pm, meta["methods"]):
        entry, old, base = meta["methods"].get(m), pm.get(m), m.partition("+")[0]
        src = {}
        for stage in LAYOUT:
            if stage in new.done.get(m, ()):
                src[stage] = "new"
                continue
            if old is None or stage not in prev.tables or not (prev.tables[stage]["method"] == m).any():
                continue
            if m in changed:
                why = "the method was fitted again, to another metric" if "fingerprints" in old else \
                    "the method was fitted again, and the earlier results record no fingerprint of their metric"
            elif base != m and base in changed and m not in fresh:
                why = f"{base} was fitted again, to another metric"
            elif stage == "attack" and n_attack != pmeta.get("n_attack"):
                why = f"this run attacked {n_attack} points, that one {pmeta.get('n_attack')}"
            else:
                src[stage] = "old"
                continue
            dropped.append(f"{m} {stage}: {why}")
        if entry is None and not src:
            continue  # not run now, and nothing of it still stands
        if m in fresh or old is None or (base != m and base in changed):
            e = entry
        else:  # not run now, or its fit failed now: the earlier entry stands, with this run's failures
            e = json.loads(json.dumps(old))
            if entry is not None:
                e["failures"], e["errors"] = entry.get("failures", []), entry.get("errors", [])
        for stage, lay in LAYOUT.items():  # a kept unit's entries come with it; a dropped one's go
            time_key, cached_key = _stage_keys(lay, K)
            for d, k in (("stage_s", time_key), ("cached", cached_key)):
                if src.get(stage) == "old" and k in old.get(d, {}):
                    e.setdefault(d, {})[k] = old[d][k]
                elif src.get(stage) is None:
                    e.get(d, {}).pop(k, None)
            for k in lay.extra:
                if src.get(stage) == "old" and k in old:
                    e[k] = old[k]
                elif src.get(stage) is None:
                    e.pop(k, None)
        if any(v == "old" for v in src.values()):
            kept[m] = [s for s, v in src.items() if v == "old"]
        source[m], methods_meta[m] = src, e

    tables = {}
    for stage in LAYOUT:
        parts = []
        for m, src in source.items():
            if src.get(stage):
                t = (new_tables if src[stage] == "new" else prev.tables)[stage]
                parts.append(t[t["method"] == m])
        if parts:
            tables[stage] = pd.concat(parts, ignore_index=True).fillna("")
    radii = new_radii[["test_index", "label"]].copy()
    checks = {}
    for m, src in source.items():
        for stage, where in src.items():
            lay = LAYOUT[stage]
            frame, chk = (new_radii, meta["checks"]) if where == "new" else (prev.radii, pmeta.get("checks", {}))
            for c in lay.columns:
                if f"{m}.{c.format(K=K)}" in frame:
                    radii[f"{m}.{c.format(K=K)}"] = frame[f"{m}.{c.format(K=K)}"].to_numpy()
            key = f"{m}/{lay.check.format(K=K)}" if lay.check else None
            if key in chk:
                checks[key] = chk[key]

    out = dict(meta, methods=methods_meta, checks=checks)
    out["n_attack"] = int(n_attack) if "attack" in tables else 0
    out["failures"] = []
    for m, e in methods_meta.items():
        note = f" (the {', '.join(kept[m])} results of an earlier run are kept)" if m in kept and m in meta["methods"] \
            else ""
        legacy = m not in meta["methods"] and "failures" not in e  # an entry kept from a folder of before
        out["failures"] += [f + note for f in (_legacy_failures(pmeta, m) if legacy else e.get("failures", []))]
    out["violations"] = violation_messages(checks, K)
    merged_plan = _merged_plan(plan, pmeta.get("plan") or {}, methods_meta, fresh, kept, tables, out["n_attack"])
    out["profile"] = merged_plan.profile
    out["plan"] = {k: v for k, v in asdict(merged_plan).items() if k != "pruning_radius" or v is not None}
    out["deviations"] = merged_plan.deviations(meta["n_train_full"], meta["n_train"]) + _fit_deviations(methods_meta)
    if kept and pmeta.get("device") not in (None, meta["device"]):
        out["device"] = f"{meta['device']}; rows kept from an earlier run: {pmeta['device']}"
    out["merge"] = {"previous": status, "kept": kept, "dropped": dropped,
                    "run_failures": [f for e in meta["methods"].values() for f in e.get("failures", [])],
                    "run_violations": violation_messages(meta["checks"], K)}
    return out, tables, radii


def _legacy_failures(prev_meta: dict, method: str) -> list[str]:
    """A method's failures in a folder written before they were kept per method."""
    label = f"{LEARNERS.get(method, method)}: "
    return [f for f in prev_meta.get("failures", []) if isinstance(f, str) and f.startswith(label)]


def _merged_plan(plan: Plan, prev_plan: dict, methods: dict, fresh: set, kept: dict, tables: dict,
                 n_attack: int) -> Plan:
    """The plan that the merged folder answers: each method with the settings it was fitted
    with (``fresh``: in this run; with rows ``kept``: in the previous plan), the stages with rows."""
    def entry(key, kind):  # an entry of the previous plan, {} / () when absent or of another type
        value = prev_plan.get(key)
        return value if isinstance(value, kind) else kind()

    base = [m for m, e in methods.items() if not e.get("pruned_from")]
    fit_n, params = {}, {}
    for m in base:
        earlier = m not in fresh and m in kept
        n = entry("fit_n_train", dict).get(m) if earlier else plan.fit_n_train.get(m)
        p = entry("params", dict).get(m) if earlier else plan.params.get(m)
        if n:
            fit_n[m] = n
        if p:
            params[m] = p
    pruned = [m for m, e in methods.items() if e.get("pruned_from")]
    radius = None
    if pruned:
        radius = plan.pruning_radius if any(m in fresh for m in pruned) else prev_plan.get("pruning_radius")
        radius = float(radius) if isinstance(radius, (int, float)) and not isinstance(radius, bool) else None
    prev_stages = entry("stages", list)
    stages = tuple(s for s in STAGES if s in tables or (s == "fit" and ("fit" in plan.stages or "fit" in prev_stages)))
    profiles = [plan.profile] if fresh or not prev_plan.get("profile") else []
    if set(kept) - fresh and prev_plan.get("profile"):
        profiles += str(prev_plan["profile"]).split(", ")
    return replace(plan, methods=tuple(base), fit_n_train=fit_n, params=params, stages=stages,
                   n_attack=n_attack if 0 < n_attack < plan.n_test else None, pruning_radius=radius,
                   profile=", ".join(dict.fromkeys(profiles)))


def _fit_deviations(methods: dict) -> list[str]:
    out = []
    for m, e in methods.items():
        info = e.get("fit_info")
        rank = info.get("projected_rank") if isinstance(info, dict) and not e.get("pruned_from") else None
        if rank:
            out.append(f"{LEARNERS.get(m, m)}: metric-learn's solution was not finite (singular within-class "
                       f"scatter), so it was fitted in the {rank}-dimensional principal subspace (learners.LFDA).")
    return out


# --------------------------------------------------------------------------- writing


def _write_file(path: Path, text: str) -> None:
    """One file of the new folder, flushed to disk."""
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def _json_default(o):
    if isinstance(o, np.generic):  # numpy scalars: int, float, bool, str
        return o.item()
    if isinstance(o, (np.ndarray, tuple)):
        return list(o) if isinstance(o, tuple) else o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o)}")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # a leftover of this process: its writer has finished or failed
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def recover(out_dir: Path) -> None:
    """Repair what an interrupted :func:`save_results` left beside ``out_dir`` (of a process
    no longer running): a new folder complete but not yet renamed into place is moved in,
    an old one renamed aside is moved back, and the temporary folder is removed."""
    for tmp in sorted(out_dir.parent.glob(f".{out_dir.name}.tmp-*")):
        try:
            pid = int(tmp.name[len(out_dir.name) + 6:].split("-", 1)[0])
        except ValueError:
            continue
        if not tmp.is_dir() or _pid_alive(pid):
            continue
        new, old = tmp / "new", tmp / "old"
        if not out_dir.exists():
            if old.is_dir() and (new / "metrics_meta.json").exists():
                os.rename(new, out_dir)  # cut between the two renames: the new folder is complete
            elif old.is_dir():
                os.rename(old, out_dir)
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _locked(results_dir: Path):
    """One writer at a time in ``results_dir`` (a POSIX advisory lock on the folder itself,
    so no lock file is left behind; elsewhere, none)."""
    try:
        import fcntl

        fd = os.open(results_dir, os.O_RDONLY)
    except (ImportError, OSError):  # not POSIX, or a folder that cannot be opened for locking
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def save_results(results_dir, new: RunOutput) -> dict:
    """Merge ``new`` into ``results/<dataset>/`` (module docstring) and replace the folder
    atomically. Returns the metadata as written."""
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    name, K = new.meta["dataset"], new.plan.n_neighbors
    out_dir = results_dir / name
    with _locked(results_dir):
        recover(out_dir)
        prev, status = _read_previous(out_dir, K)
        meta, tables, radii = _merge(new, prev, status)
        tmp = Path(tempfile.mkdtemp(dir=results_dir, prefix=f".{name}.tmp-{os.getpid()}-"))
        try:
            staged = tmp / "new"
            staged.mkdir()
            for stage, table in tables.items():
                _write_file(staged / LAYOUT[stage].table.format(K=K), table.to_csv(index=False))
            _write_file(staged / "radii.csv", radii.to_csv(index=False))
            text = json.dumps(meta, indent=2, default=_json_default)
            _write_file(staged / "metrics_meta.json", text)
            if out_dir.exists():
                os.rename(out_dir, tmp / "old")
            try:
                os.rename(staged, out_dir)
            except BaseException:
                if (tmp / "old").exists() and not out_dir.exists():
                    os.rename(tmp / "old", out_dir)
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return json.loads(text)  # as written (tuples as lists)
