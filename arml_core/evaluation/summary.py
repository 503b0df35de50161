"""Reading ``results/`` back and writing ``results/SUMMARY.md``.

:func:`load_results` reads one data set's folder (written by
:mod:`arml_core.evaluation.reproduce`) into a :class:`DatasetResults`;
:func:`claims` judges the paper's claims on its tables; :func:`summary_markdown` /
:func:`write_summary` render every data set present as one Markdown page (the paper's
tables, the deviations next to their numbers, stage times, soundness checks).
The paper-layout table (methods x radii) is :func:`paper_layout`, shared with
:class:`arml_core.evaluation.evaluate.Evaluation`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..learners import LEARNERS

PAPER_DATASETS = ("splice", "pendigits", "satimage", "usps", "mnist", "fashion-mnist")
K_PAPER = 11


def paper_layout(tidy: pd.DataFrame, value: str, order) -> pd.DataFrame:
    """The paper's table layout: one row per method (in ``order``), one column per radius
    (labelled ``f"{r:g}"``), the column ``value`` of a tidy (method, radius, value) frame."""
    wide = tidy.pivot(index="method", columns="radius", values=value)
    wide = wide.reindex([m for m in order if m in wide.index])
    wide.columns = [f"{c:g}" for c in wide.columns]
    return wide


@dataclass
class DatasetResults:
    """One data set's ``results/<dataset>/`` read back."""

    dataset: str
    meta: dict
    nn1: pd.DataFrame | None
    certified: pd.DataFrame | None
    empirical: pd.DataFrame | None
    radii: pd.DataFrame | None

    @property
    def methods(self) -> list[str]:
        return list(self.meta.get("methods", {}))

    @property
    def extension_methods(self) -> list[str]:
        """The rows beyond the paper's protocol ('<method>+pruning', ``reproduce --defence pruning``)."""
        return [m for m, v in self.meta.get("methods", {}).items() if v.get("pruned_from")]

    def table(self, which: str) -> pd.DataFrame | None:
        """Paper layout: rows = methods, columns = radii, robust error in %.
        ``which``: 'nn1', 'certified' or 'empirical'."""
        df = {"nn1": self.nn1, "certified": self.certified, "empirical": self.empirical}[which]
        if df is None or df.empty:
            return None
        return paper_layout(df, "robust_error_pct", self.methods)

    def per_point(self, stage: str) -> dict[str, np.ndarray]:
        """method -> radii of ``stage`` ('nn1_exact', 'nn1_bound', 'knn11_certified',
        'knn11_empirical'; the empirical ones only on the attacked points), such that
        :func:`arml_core.metric.robust_error_curve` on them gives the numbers of the tables.

        ``radii.csv`` keeps 8 significant digits; the tables were counted ("radius <= r")
        on the full-precision radii. A radius a few ulps above a grid radius ``r`` (splice,
        Euclidean 1-NN: ``0.10000000000000017``, a tie up to round-off) is stored as ``r``
        and would count at ``r``. Where the stored radii equal to ``r`` outnumber what the
        table counts, the excess (the first in test order) is put back just above ``r``
        (by ``1e-9 r``, within the rounding of the stored value): :func:`_restore_counts`."""
        if self.radii is None:
            return {}
        out = {}
        for m in self.methods:
            col = f"{m}.{stage}"
            if col in self.radii:
                v = self.radii[col].to_numpy(dtype=float)
                v = v[~np.isnan(v)] if stage.endswith("empirical") else v
                out[m] = _restore_counts(v, self._counts(m, stage, len(v)))
        return out

    def correct_at_radius_zero(self, stage: str) -> dict[str, int]:
        """method -> the test points its classifier gets right whose radius of ``stage``
        ('nn1_exact': 1-NN, 'knn<K>_certified': K-NN) is 0 anyway: how many points the
        robust error at ``r = 0`` counts beyond the clean error. For the exact 1-NN radius
        these are ties (a same-class and an other-class nearest point at equal distance); for
        the certified K-NN bound also points won by a plurality of fewer than ``(K + 1) / 2``
        votes (Theorem 1 needs a majority)."""
        K = self.meta.get("K", K_PAPER)
        k = {"nn1_exact": "1", f"knn{K}_certified": str(K)}.get(stage)
        if k is None:
            raise ValueError(f"no clean error belongs to the stage {stage!r}: use 'nn1_exact' or 'knn{K}_certified'")
        out = {}
        for m, radii in self.per_point(stage).items():
            clean = self.meta["methods"].get(m, {}).get("clean_error", {}).get(k)
            if clean is not None:
                out[m] = int(np.sum(radii <= 0)) - int(round(clean * len(radii)))
        return out

    @property
    def n_classes(self) -> int | None:
        """The number of classes among the test labels (None without radii.csv)."""
        return None if self.radii is None or "label" not in self.radii else int(self.radii["label"].nunique())

    def _counts(self, method: str, stage: str, n: int) -> list[tuple[slice, np.ndarray, np.ndarray]]:
        """(points, grid, number of radii <= each grid radius) that the tables record for
        ``method``'s radii of ``stage``, over disjoint slices of its ``n`` points."""
        K = self.meta.get("K", K_PAPER)
        table, col = {"nn1_exact": (self.nn1, "robust_error_pct"),
                      f"knn{K}_certified": (self.certified, "robust_error_pct"),
                      f"knn{K}_empirical": (self.empirical, "robust_error_pct")}.get(stage, (None, None))
        if table is None:
            return []

        def counts(df, column, size):
            rows = df[df["method"] == method]
            if rows.empty or column not in rows:
                return None
            return rows["radius"].to_numpy(float), np.rint(rows[column].to_numpy(float) * size / 100).astype(int)

        total = counts(table, col, n)
        if total is None:
            return []
        sub = None
        if stage == f"knn{K}_certified" and self.empirical is not None:
            n_att = int(self.meta.get("n_attack") or 0)
            sub = counts(self.empirical, "certified_same_points_pct", n_att) if 0 < n_att < n else None
        if sub is None or not np.array_equal(sub[0], total[0]):
            return [(slice(None), *total)]
        return [(slice(0, n_att), *sub), (slice(n_att, None), total[0], total[1] - sub[1])]


def _restore_counts(radii: np.ndarray, counts) -> np.ndarray:
    """``radii`` (read back at 8 significant digits) with, for each ``(points, grid,
    count)`` of ``counts``, the radii of ``points`` stored as exactly a grid radius ``r``
    beyond ``count`` moved to ``r (1 + 1e-9)``, so that as many radii are ``<= r`` as the
    table counted. A mismatch that rounding cannot explain (fewer radii ``<= r`` than
    counted, or more than the ties at ``r`` account for) is left as it is."""
    out = np.array(radii, dtype=float)
    for points, grid, count in counts:
        part = out[points]  # a view: a slice
        for r, c in sorted(zip(grid, count)):
            excess = int(np.sum(part <= r)) - int(c)
            at = np.flatnonzero(part == r)
            if 0 < excess <= len(at):
                part[at[:excess]] = r * (1 + 1e-9) if r > 0 else np.nextafter(0.0, 1.0)
    return out


def results_datasets(results_dir="results") -> list[str]:
    """Data sets with a complete-enough ``results/<dataset>/metrics_meta.json``, paper order first."""
    root = Path(results_dir)
    if not root.is_dir():
        return []
    found = [p.parent.name for p in root.glob("*/metrics_meta.json")]
    return sorted(found, key=lambda n: (PAPER_DATASETS.index(n) if n in PAPER_DATASETS else 99, n))


def load_results(dataset: str, results_dir="results") -> DatasetResults:
    """Read ``results/<dataset>/``; a missing table is None, a malformed file raises ValueError."""
    d = Path(results_dir) / dataset
    meta_path = d / "metrics_meta.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"no results for {dataset!r} in {Path(results_dir).resolve()} "
                                f"(run: python -m arml_core reproduce --datasets {dataset})")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{meta_path} is not valid JSON: {exc}") from None
    K = meta.get("K", K_PAPER)

    def read(name, required=("method", "radius", "robust_error_pct")):
        p = d / name
        if not p.exists():
            return None
        df = pd.read_csv(p)
        missing = [c for c in required if c not in df.columns]
        if missing:
            raise ValueError(f"{p} lacks the columns {missing}")
        return df

    return DatasetResults(dataset, meta, read("nn1_exact.csv"), read(f"knn{K}_certified.csv"),
                          read(f"knn{K}_empirical.csv"), read("radii.csv", required=()))


# --------------------------------------------------------------------------- the summary


def claims(res: DatasetResults) -> dict[str, str]:
    """The paper's claims, judged on this data set's tables: 'holds', 'fails: ...' or 'n/a'.
    Rows beyond the paper's protocol (:attr:`DatasetResults.extension_methods`) are left out."""
    out, ext = {}, res.extension_methods

    def table(which):
        t = res.table(which)
        return None if t is None else t.drop(index=ext, errors="ignore")

    for which, label in (("certified", f"ARML lowest certified K={res.meta.get('K', K_PAPER)} robust error at every radius r > 0"),
                         ("nn1", "ARML lowest exact 1-NN robust error at every radius r > 0")):
        t = table(which)
        if t is None or "arml" not in t.index or len(t.index) < 2:
            out[label] = "n/a"
            continue
        others = t.drop(index="arml").min(axis=0)
        worse = [c for c in t.columns[1:] if t.loc["arml", c] > others[c] + 1e-9]
        out[label] = "holds" if not worse else f"fails at r = {', '.join(worse)}"
    K = str(res.meta.get("K", K_PAPER))
    clean = {m: v["clean_error"][K] for m, v in res.meta.get("methods", {}).items() if "clean_error" in v and m not in ext}
    label = f"ARML clean {K}-NN error minus the best method's (points)"
    out[label] = f"{100 * (clean['arml'] - min(clean.values())):+.1f}" if "arml" in clean and len(clean) > 1 else "n/a"
    t = table("certified")
    for m in ("nca", "lmnn"):
        label = f"{LEARNERS[m]} less robust than Euclidean (certified K={res.meta.get('K', K_PAPER)}, r > 0)"
        if t is None or m not in t.index or "euclidean" not in t.index:
            out[label] = "n/a"
            continue
        cols = t.columns[1:]
        worse = [c for c in cols if t.loc[m, c] > t.loc["euclidean", c] + 1e-9]
        out[label] = f"holds at {len(worse)} of {len(cols)} radii"
    return out


def _label(name: str) -> str:
    """A method's display name; a row beyond the paper, '<method>+pruning', as 'ARML + pruning'."""
    base, _, extra = name.partition("+")
    return f"{LEARNERS[base]} + {extra}" if extra and base in LEARNERS else LEARNERS.get(name, name)


def _pruning_md(res: DatasetResults) -> list[str]:
    """The section on the rows beyond the paper's protocol (adversarial pruning), or []."""
    rows = {}
    for mm in res.extension_methods:
        v, p = res.meta["methods"][mm], res.meta["methods"][mm].get("pruning")
        if p:
            optimum = "minimal" if p["exact"] else f"not proven minimal: >= {p['lower_bound']} needed"
            rows[mm] = {"r": f"{p['radius']:g}", "kept": str(p["n_kept"]), "of": str(p["n_train"]),
                        "removed (%)": 100 * (1 - p["n_kept"] / p["n_train"]), "solver": f"{p['solver']} ({optimum})",
                        **{f"clean {k}-NN": 100 * e for k, e in v.get("clean_error", {}).items()}}
    if not rows:
        return []
    return ["**Beyond the paper's protocol: adversarial pruning** (Yang et al., AISTATS 2020). The rows "
            "'+ pruning' are K-NN with the same metric on its training set pruned so that no two points of "
            "different labels have a separation `u^T M u / ||M u||` below 2r under that metric "
            "(`arml_core.pruning`; the solver says whether the removal is proven minimal); every kept training "
            "point then has an exact 1-NN radius of at least r. The claims of the overview leave these rows out.", "", _md_table(pd.DataFrame(rows).T), ""]


def _md_table(df: pd.DataFrame, index_name: str = "method", fmt="{:.1f}") -> str:
    cols = [index_name] + list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for idx, row in df.iterrows():
        cells = [_label(idx)] + [fmt.format(v) if isinstance(v, (float, np.floating)) and np.isfinite(v)
                                              else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_markdown(results_dir="results") -> str:
    datasets = results_datasets(results_dir)
    parts = ["# Reproduction of the ARML paper's evaluation", "",
             "Written by `python -m arml_core reproduce` (`make reproduce`) from the files in this folder; "
             "do not edit by hand. Robust errors are in %, on the first 1000 test points after "
             "`shuffle(random_state=42)` unless a deviation says otherwise. 1-NN: exact minimal perturbations "
             "(each verified, so exact = certified = empirical). K = 11: the certified lower bound (left) and the "
             "region attack (right).", ""]
    if not datasets:
        return "\n".join(parts + ["No results yet."]) + "\n"
    overview = []
    loaded = {name: load_results(name, results_dir) for name in datasets}  # each folder read once
    for name, res in loaded.items():
        c = claims(res)
        total = sum(sum(v for v in m.get("stage_s", {}).values()) for m in res.meta["methods"].values())
        overview.append([name, res.meta.get("device", "?"), f"{total / 60:.1f}",
                         "none" if not res.meta.get("violations") else f"**{len(res.meta['violations'])}**"]
                        + list(c.values()))
        claim_names = list(c)
    head = ["data set", "device", "compute (min)", "soundness violations"] + claim_names
    parts += ["## Overview", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    parts += ["| " + " | ".join(map(str, r)) + " |" for r in overview]
    parts.append("")
    for name, res in loaded.items():
        m = res.meta
        parts += [f"## {name}", "",
                  f"{m.get('description', '')}  ",
                  f"Training points: {m['n_train']} (of {m['n_train_full']}); test points: {m['n_test']}; "
                  f"K = {m['K']}; grid: {', '.join(f'{g:g}' for g in m['grid'])}; profile `{m['profile']}`; "
                  f"device: {m['device']}.", ""]
        if m.get("deviations"):
            parts += ["**Deviations from the protocol:**", ""] + [f"- {d}" for d in m["deviations"]] + [""]
        if m.get("failures"):
            parts += ["**Methods that failed (no rows below):**", ""] + [f"- {d}" for d in m["failures"]] + [""]
        clean = pd.DataFrame({mm: {"clean 1-NN": 100 * v["clean_error"]["1"],
                                   f"clean {m['K']}-NN": 100 * v["clean_error"][str(m["K"])]}
                              for mm, v in m["methods"].items() if "clean_error" in v}).T
        t1 = res.table("nn1")
        if t1 is not None:
            parts += [f"**1-NN, exact robust error (%)** ({m['n_test']} points)", "",
                      _md_table(pd.concat([clean[["clean 1-NN"]], t1], axis=1)), ""]
            ties = {mm: v["nn1_ties"] for mm, v in m["methods"].items() if v.get("nn1_ties")}
            if ties:
                parts += ["r = 0 exceeds the clean error where a correctly classified point is equidistant "
                          "(to round-off) from its nearest same-class and other-class training points: its "
                          "minimal perturbation is 0 (an arbitrarily small step flips it). Such points: "
                          + ", ".join(f"{_label(k)} {v}" for k, v in ties.items()) + ".", ""]
        tc, te = res.table("certified"), res.table("empirical")
        if tc is not None:
            both = tc.copy()
            if te is not None:
                both[""] = ""  # a blank column between the two blocks
                emp = te.copy()
                emp.columns = [f"{c} (emp.)" for c in emp.columns]
                both = pd.concat([both, emp], axis=1)
            n_att = m.get("n_attack") or m["n_test"]
            parts += [f"**{m['K']}-NN: certified (left, {m['n_test']} points) | empirical, region attack "
                      f"(right, {n_att} points) robust error (%)**", "", _md_table(both), ""]
            if te is not None and n_att < m["n_test"]:
                same = paper_layout(res.empirical, "certified_same_points_pct", res.methods)
                parts += [f"Certified robust error (%) on the same {n_att} attacked points:", "",
                          _md_table(same), ""]
        parts += _pruning_md(res)
        stage = pd.DataFrame({mm: v.get("stage_s", {}) for mm, v in m["methods"].items()}).T
        if res.extension_methods:  # their fit is their method's; the methods have no pruning stage
            stage = stage.astype(object).where(stage.notna(), "")
        if not stage.empty:
            parts += ["Wall time per stage (s; a stage loaded from `runs/` shows the time it took when computed):",
                      "", _md_table(stage), ""]
        checks = m.get("checks", {})
        if m.get("violations"):
            parts += ["**SOUNDNESS VIOLATIONS (bugs):**", ""] + [f"- {v}" for v in m["violations"]] + [""]
        elif checks:
            parts += [f"Checks passed: {len(checks)} (every exact 1-NN perturbation verified, the closed-form "
                      "bound never above it; the certified K-NN radius never above the attack's norm).", ""]
    return "\n".join(parts) + "\n"


def write_summary(results_dir="results") -> Path:
    path = Path(results_dir) / "SUMMARY.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(summary_markdown(results_dir))
    return path
