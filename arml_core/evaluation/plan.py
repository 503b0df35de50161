"""The plan of the paper's evaluation (ARML_NOTES section 9) for one data set.

:func:`make_plan` builds a :class:`Plan` (methods, stages, radii, the training and test
subsamples of a profile) and :meth:`Plan.deviations` states, in words, how it departs from
the paper's protocol; :func:`fit_settings` is the cache key of a method's learned metric.
:mod:`arml_core.evaluation.reproduce` runs a plan.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..learners import LEARNERS
from .._validation import check_choice, check_number
from .evaluate import parse_grid
from .summary import K_PAPER, PAPER_DATASETS

PAPER_METHODS = ("euclidean", "nca", "lmnn", "itml", "lfda", "arml")
GRID_STEP = {"splice": 0.1, "pendigits": 0.1, "satimage": 0.15, "usps": 0.5, "mnist": 0.5,
             "fashion-mnist": 0.5}
N_TEST = 1000
SEED = 42
STAGES = ("fit", "nn1", "knn11", "attack")
PROFILES = ("full", "gpu", "cpu")
DEFENCES = ("none", "pruning")  # 'pruning': beyond the paper, every method also on its adversarially pruned set
PRUNING_STEPS = {"satimage": 1}  # default pruning radius, in grid steps (else 2; satimage: 2 empty a class)

# The CPU profile: what a 2-core machine without a GPU can finish in about an hour per
# data set. Each entry becomes a stated deviation in the summary. The fit subsamples of
# the metric-learn baselines (CPU-bound everywhere) also apply to the 'gpu' profile.
CPU_REFERENCE_N_TRAIN = {"mnist": 3000, "fashion-mnist": 3000}
CPU_FIT_N_TRAIN = {  # metric-learn baselines whose cost grows quadratically or worse in n
    "usps": {"nca": 3000, "lmnn": 3000, "itml": 3000},
    "mnist": {"nca": 2000, "lmnn": 2000, "itml": 2000},
    "fashion-mnist": {"nca": 2000, "lmnn": 2000, "itml": 2000},
}
CPU_N_ATTACK = {"splice": 200, "pendigits": 200, "satimage": 200, "usps": 100, "mnist": 100,
                "fashion-mnist": 100}


def paper_grid(dataset: str) -> np.ndarray:
    """The six radii of the paper's tables for ``dataset``: 0, step, ..., 5 step."""
    step = GRID_STEP.get(dataset)
    if step is None:
        raise ValueError(f"no paper grid for {dataset!r}; the paper's data sets are {', '.join(PAPER_DATASETS)}")
    return np.round(step * np.arange(6), 10)


@dataclass
class Plan:
    """What is run for one data set, and how it departs from the paper's protocol."""

    dataset: str
    profile: str  # 'full' (the protocol), 'gpu' or 'cpu' (the stated subsamples)
    methods: tuple
    grid: list
    n_neighbors: int = K_PAPER
    n_test: int = N_TEST
    seed: int = SEED
    reference_n_train: int | None = None  # the K-NN's training set (None: all of it)
    fit_n_train: dict = field(default_factory=dict)  # method -> fit subsample (absent: all)
    params: dict = field(default_factory=dict)  # method -> learner parameters
    n_attack: int | None = None  # first n test points attacked (None: all)
    stages: tuple = STAGES
    pruning_radius: float | None = None  # beyond the paper: '<method>+pruning' rows (None: none)

    def deviations(self, n_train_full: int | None = None, n_train_ref: int | None = None) -> list[str]:
        out = []
        if self.reference_n_train is not None:
            total = f" of {n_train_full}" if n_train_full else ""
            out.append(f"Training set subsampled to {self.reference_n_train}{total} points (stratified, "
                       f"seed {self.seed}) for every method, fitting and K-NN alike: the CPU profile "
                       "(--profile gpu or full uses all of it).")
        for m, n in sorted(self.fit_n_train.items()):
            if m in self.methods:
                of = f" of the {n_train_ref}" if n_train_ref else ""
                out.append(f"{LEARNERS.get(m, m)} fitted on a stratified subsample of {n}{of} training "
                           "points (its cost grows quadratically or worse with n); its K-NN uses the "
                           "whole training set.")
        for m, p in sorted(self.params.items()):
            if m in self.methods and p:
                out.append(f"{LEARNERS.get(m, m)} run with {json.dumps(p, sort_keys=True)} instead of "
                           "its defaults.")
        if "attack" in self.stages:
            out.append("Empirical robust error from the white-box region attack (ARML_NOTES section 7), "
                       "not the paper's black-box Boundary Attack: its norms are at most the Boundary "
                       "Attack's on 99% of pendigits points (benchmarks/RESULTS.md), so the empirical "
                       "errors here are, if anything, higher than the paper's method would give.")
            if self.n_attack is not None and self.n_attack < self.n_test:
                out.append(f"Empirical K = {self.n_neighbors} robust error on the first {self.n_attack} of "
                           f"the {self.n_test} test points; the certified error on those same points is "
                           "given beside it.")
        if self.pruning_radius is not None:
            out.append(f"Beyond the paper's protocol: every method is also evaluated, in the rows "
                       f"'<method>+pruning', on its training set adversarially pruned at r = {self.pruning_radius:g} "
                       "(Yang et al., AISTATS 2020; arml_core.pruning, separation under the method's metric); "
                       "the paper's claims are judged without these rows.")
        return out


def make_plan(dataset: str, *, profile: str = "cpu", methods: Sequence[str] = PAPER_METHODS,
              n_attack: int | None = None, grid: Sequence[float] | None = None,
              stages: Sequence[str] = STAGES, defence: str = "none", pruning_radius: float | None = None) -> Plan:
    """The plan for one data set, its deviations stated.

    ``profile``: 'full' is the paper's protocol; 'gpu' keeps the full training and test
    sets but fits NCA/LMNN/ITML (CPU-bound) on the subsamples of ``CPU_FIT_N_TRAIN``;
    'cpu' also subsamples MNIST/Fashion-MNIST (``CPU_REFERENCE_N_TRAIN``) and attacks
    only the first ``CPU_N_ATTACK`` test points. ``grid`` replaces the paper's radii
    (required for a data set outside the paper). ``defence='pruning'`` (beyond the
    paper's protocol) also evaluates every method on its training set adversarially
    pruned at ``pruning_radius`` (default: two grid steps, one on satimage: ``PRUNING_STEPS``)."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {', '.join(PROFILES)}, got {profile!r}")
    stages = tuple(stages)
    bad = [x for x in stages if x not in STAGES]
    if bad:
        raise ValueError(f"unknown stage(s) {', '.join(bad)}; choose from {', '.join(STAGES)}")
    if "attack" in stages and "knn11" not in stages:
        raise ValueError("the attack stage compares with the certified radii: add the knn11 stage")
    methods = tuple(m.lower() for m in methods)
    for m in methods:
        if m not in LEARNERS:
            raise ValueError(f"unknown method {m!r}; choose from {', '.join(LEARNERS)}")
    if not methods:
        raise ValueError("no method selected")
    if grid is None:
        grid = paper_grid(dataset)
    else:
        grid = parse_grid(grid)
    plan = Plan(dataset=dataset, profile=profile, methods=methods, grid=list(map(float, grid)), stages=stages)
    if profile in ("cpu", "gpu"):
        plan.fit_n_train = {m: n for m, n in CPU_FIT_N_TRAIN.get(dataset, {}).items() if m in methods}
    if profile == "cpu":
        plan.reference_n_train = CPU_REFERENCE_N_TRAIN.get(dataset)
        plan.n_attack = CPU_N_ATTACK.get(dataset)
    if n_attack is not None:
        if n_attack < 1:
            raise ValueError(f"n_attack must be at least 1, got {n_attack}")
        plan.n_attack = None if n_attack >= plan.n_test else int(n_attack)
    check_choice("defence", defence, DEFENCES)
    if defence == "pruning":
        steps = min(PRUNING_STEPS.get(dataset, 2), len(plan.grid) - 1)
        radius = plan.grid[steps] if pruning_radius is None else pruning_radius
        plan.pruning_radius = float(check_number("pruning_radius", radius))
    elif pruning_radius is not None:
        raise ValueError("pruning_radius is the radius of defence='pruning'; set defence='pruning' too")
    return plan


def _fit_settings(plan: Plan, method: str) -> dict:
    """Cache key settings of a learned metric. With the protocol's defaults they are
    ``{"protocol": "paper", "n_train": 0, "seed": 42}`` (``n_train`` 0: all)."""
    s = {"protocol": "paper", "n_train": int(plan.fit_n_train.get(method) or 0), "seed": plan.seed}
    if plan.reference_n_train is not None:
        s["reference_n_train"] = int(plan.reference_n_train)
    if plan.params.get(method):
        s["params"] = plan.params[method]
    return s


fit_settings = _fit_settings  # the public name (benchmarks/bench_pruning.py reuses the reproduction's metrics)
