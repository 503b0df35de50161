"""The decision-based black-box attacks of foolbox on Mahalanobis K-NN (``ARML_NOTES.md``
section 7): :class:`BoundaryAttack` (Brendel et al. 2018) and :class:`HopSkipJumpAttack`
(Chen et al. 2019), run on :class:`KNNModule`, the K-NN as a ``torch.nn.Module``.
:class:`_FoolboxAttack` holds their common settings and describes the plumbing: the map
to foolbox's scalar bounds, the starting points, batches and randomness.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from ..._validation import check_integer, check_number
from ...knn import MahalanobisKNN, pairwise_sq_dists
from .base import _Attack, _Problem


@dataclass(frozen=True)
class _FoolboxAttack(_Attack):
    """Common settings and plumbing of the foolbox decision-based attacks.

    foolbox runs on :class:`KNNModule` (logits = vote counts minus ``1e-3 * class index``,
    so that ``argmax`` is exactly ``MahalanobisKNN.predict``).  foolbox needs scalar bounds,
    and its HopSkipJump clips to ``[0, 1]`` whatever the bounds, so the module takes
    ``u in [0, 1]^D`` and maps it to ``x = lower + (upper - lower) u`` (an isotropic map:
    the l2 geometry is unchanged), then clamps ``x`` to a per-feature ``box`` when one is
    given.  ``(lower, upper)`` is the scalar hull of ``box``, else ``bounds``, else the range
    of the training and test data widened by ``pad`` on each side (:func:`_foolbox_bounds`).
    Starting points: the other-class training point nearest to ``x`` (under ``M``) that the
    classifier does not label ``y``, moved towards ``x`` by a binary search
    (:func:`_starting_points`); a point without one is a failure (``inf``) and is left out
    of the foolbox batch.  Randomness: ``random_state`` seeds torch inside
    ``torch.random.fork_rng``, so the caller's RNG state is unchanged.  Runs in float64 on
    ``device``.
    """

    bounds: tuple | None = None
    pad: float = 0.1
    batch_size: int = 256
    random_state: int = 0
    n_start: int = 32
    start_search_steps: int = 25

    def _check_common(self):
        if self.bounds is not None:
            try:
                lo, hi = (float(v) for v in self.bounds)
            except (TypeError, ValueError):
                raise ValueError(f"bounds must be None or a pair of numbers (lower, upper), got {self.bounds!r}") from None
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ValueError(f"bounds must be finite with lower < upper, got {self.bounds!r}")
        check_number("pad", self.pad, allow_zero=True)
        check_integer("batch_size", self.batch_size, 1)
        check_integer("random_state", self.random_state, 0)
        check_integer("n_start", self.n_start, 1)
        check_integer("start_search_steps", self.start_search_steps, 0)

    def _foolbox_attack(self):
        raise NotImplementedError

    def _run(self, prob, idx, progress):
        return _foolbox_run(self, prob, idx, progress)


@dataclass(frozen=True)
class BoundaryAttack(_FoolboxAttack):
    """foolbox's Boundary Attack (decision-based, l2), run on :class:`KNNModule`.

    Parameters
    ----------
    steps, spherical_step, source_step, source_step_convergance, step_adaptation
        foolbox's ``BoundaryAttack`` settings (``steps`` default lowered from 25000).
    bounds : (lower, upper) or None
        Scalar input bounds when ``box`` is None; default: the data range widened by ``pad``
        times its width on each side.
    batch_size : int
        Points per foolbox call.
    random_state : int
        Seed of the attack's random proposals (torch RNG, forked: no global side effect).
    n_start, start_search_steps
        Other-class training points examined for a starting point, and binary-search steps
        that move it towards ``x``.
    """

    name: ClassVar[str] = "boundary"
    steps: int = 5000
    spherical_step: float = 1e-2
    source_step: float = 1e-2
    source_step_convergance: float = 1e-7
    step_adaptation: float = 1.5

    def __post_init__(self):
        self._check_common()
        check_integer("steps", self.steps, 1)
        for name in ("spherical_step", "source_step", "source_step_convergance"):
            check_number(name, getattr(self, name))
        check_number("step_adaptation", self.step_adaptation)
        if self.step_adaptation <= 1:
            raise ValueError(f"step_adaptation must be > 1, got {self.step_adaptation!r}")

    def _foolbox_attack(self):
        fb = _foolbox()
        return fb.attacks.BoundaryAttack(
            steps=self.steps, spherical_step=self.spherical_step, source_step=self.source_step,
            source_step_convergance=self.source_step_convergance,
            step_adaptation=self.step_adaptation,
        )


@dataclass(frozen=True)
class HopSkipJumpAttack(_FoolboxAttack):
    """foolbox's HopSkipJump attack (decision-based, l2), run on :class:`KNNModule`.

    ``steps``, ``initial_gradient_eval_steps``, ``max_gradient_eval_steps`` and ``gamma`` are
    foolbox's settings.  Defaults lowered: the gradient evaluations for speed (every
    estimate is that many calls of the K-NN on the whole batch), and ``gamma`` (foolbox:
    1.0) because foolbox stops its boundary binary searches at ``gamma / D^1.5`` of the
    segment, far too coarse in the low dimensions of tabular data.  The other settings are
    as :class:`BoundaryAttack`.
    """

    name: ClassVar[str] = "hopskipjump"
    steps: int = 40
    initial_gradient_eval_steps: int = 50
    max_gradient_eval_steps: int = 500
    gamma: float = 0.01

    def __post_init__(self):
        self._check_common()
        check_integer("steps", self.steps, 1)
        check_integer("initial_gradient_eval_steps", self.initial_gradient_eval_steps, 1)
        check_integer("max_gradient_eval_steps", self.max_gradient_eval_steps, 1)
        check_number("gamma", self.gamma)

    def _foolbox_attack(self):
        fb = _foolbox()
        return fb.attacks.HopSkipJumpAttack(
            steps=self.steps, initial_gradient_eval_steps=self.initial_gradient_eval_steps,
            max_gradient_eval_steps=self.max_gradient_eval_steps, gamma=self.gamma,
            constraint="l2",
        )


class KNNModule(torch.nn.Module):
    """Mahalanobis K-NN as a torch module for decision-based attacks.

    ``forward(u)`` maps ``u`` to input space, ``x = offset + scale * u`` (clamped to
    ``[lo, hi]`` when a per-feature box is given), and returns logits ``(n, C)``: the vote
    counts of the K nearest training points minus ``1e-3 * class index``, so that ``argmax``
    equals :meth:`MahalanobisKNN.predict_encoded` (ties to the smallest class index).
    Training data, factor and labels are registered buffers (they follow ``.to(device)``).
    Runs in float64.
    """

    def __init__(self, knn: MahalanobisKNN, *, offset: float = 0.0, scale: float = 1.0, lo=None, hi=None):
        super().__init__()
        G = torch.as_tensor(knn.components_, dtype=torch.float64)
        Z = torch.as_tensor(knn.X_train_, dtype=torch.float64) @ G.T
        self.register_buffer("G", G)
        self.register_buffer("Z", Z)
        self.register_buffer("sq", (Z * Z).sum(1))
        self.register_buffer("y", torch.as_tensor(knn.y_train_, dtype=torch.int64))
        C = len(knn.classes_)
        self.register_buffer("tie", -1e-3 * torch.arange(C, dtype=torch.float64))
        D = G.shape[1]
        lo_t = torch.full((D,), -math.inf, dtype=torch.float64) if lo is None else torch.as_tensor(lo, dtype=torch.float64)
        hi_t = torch.full((D,), math.inf, dtype=torch.float64) if hi is None else torch.as_tensor(hi, dtype=torch.float64)
        self.register_buffer("lo", lo_t)
        self.register_buffer("hi", hi_t)
        self.offset = float(offset)
        self.scale = float(scale)
        self.n_neighbors = int(knn.n_neighbors_)
        self.n_classes = C

    def to_input(self, u: torch.Tensor) -> torch.Tensor:
        x = self.offset + self.scale * u.to(torch.float64)
        return torch.maximum(torch.minimum(x, self.hi), self.lo)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        x = self.to_input(u)
        d = pairwise_sq_dists(x @ self.G.T, self.Z, self.sq)
        idx = torch.topk(d, self.n_neighbors, dim=1, largest=False, sorted=True).indices
        counts = torch.zeros(len(x), self.n_classes, dtype=torch.float64, device=x.device)
        counts.scatter_add_(1, self.y[idx], torch.ones(idx.shape, dtype=torch.float64, device=x.device))
        return counts + self.tie


def _foolbox():
    """foolbox, imported on first use (its import warns about a deprecated scipy path)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import foolbox

    return foolbox


def _foolbox_bounds(atk: _FoolboxAttack, prob: _Problem):
    if prob.box is not None:
        lo, hi = prob.box
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            raise ValueError("the foolbox attacks need a finite box (or box=None and bounds=...)")
        lower, upper = float(lo.min()), float(hi.max())
        per_feature = not (np.all(lo == lower) and np.all(hi == upper))
        return lower, upper, (lo, hi) if per_feature else (None, None)
    if atk.bounds is not None:
        lower, upper = (float(v) for v in atk.bounds)
        allX = np.concatenate([prob.X_train, prob.X_test])
        if allX.min() < lower or allX.max() > upper:
            raise ValueError(
                f"bounds={atk.bounds!r} do not contain the data (range [{allX.min():.4g}, "
                f"{allX.max():.4g}])"
            )
        return lower, upper, (None, None)
    allX = np.concatenate([prob.X_train, prob.X_test])
    lower, upper = float(allX.min()), float(allX.max())
    width = max(upper - lower, 1e-12)
    return lower - atk.pad * width, upper + atk.pad * width, (None, None)


def _starting_points(prob: _Problem, module: KNNModule, idx, U, atk: _FoolboxAttack):
    """Adversarial starting points in u-space (NaN rows where none was found).

    For each point, the ``n_start`` training points nearest to it (under ``M``) that the
    classifier does not label ``y`` are tried in order, as the module sees them (mapped to
    the bounds, clamped to the box); the first adversarial one is moved towards ``x`` by
    ``start_search_steps`` halvings of the segment, staying adversarial."""
    dev = prob.dev
    pred_train = prob.predict_enc(prob.X_train)
    U_train = np.clip((prob.X_train - module.offset) / module.scale, 0.0, 1.0)
    starts = np.full(U.shape, np.nan)
    Dm = prob.dists(prob.X_test[idx])
    lists = []
    for t, i in enumerate(idx):
        ok = np.flatnonzero(pred_train != prob.yt_enc[i])
        lists.append(ok[np.argsort(Dm[t][ok], kind="stable")[: atk.n_start]])
    with torch.no_grad():
        for rank in range(atk.n_start):
            rows = [t for t in range(len(idx)) if np.isnan(starts[t, 0]) and rank < len(lists[t])]
            if not rows:
                break
            cand = np.array([U_train[lists[t][rank]] for t in rows])
            lab = torch.as_tensor(prob.yt_enc[idx[rows]], device=dev)
            adv = (module(torch.as_tensor(cand, device=dev)).argmax(1) != lab).cpu().numpy()
            starts[np.array(rows)[adv]] = cand[adv]
        has = np.flatnonzero(np.isfinite(starts[:, 0]))
        if len(has) and atk.start_search_steps:
            X0 = torch.as_tensor(U[has], device=dev)
            S = torch.as_tensor(starts[has], device=dev)
            lab = torch.as_tensor(prob.yt_enc[idx[has]], device=dev)
            lo = torch.zeros(len(has), dtype=torch.float64, device=dev)
            hi = torch.ones(len(has), dtype=torch.float64, device=dev)
            for _ in range(atk.start_search_steps):  # blend x -> start, keep the adversarial side
                mid = 0.5 * (lo + hi)
                a = module((1 - mid)[:, None] * X0 + mid[:, None] * S).argmax(1) != lab
                hi = torch.where(a, mid, hi)
                lo = torch.where(a, lo, mid)
            starts[has] = ((1 - hi)[:, None] * X0 + hi[:, None] * S).cpu().numpy()
    return starts


def _foolbox_run(atk: _FoolboxAttack, prob: _Problem, idx, progress):
    fb = _foolbox()
    dev = prob.dev
    lower, upper, (blo, bhi) = _foolbox_bounds(atk, prob)
    module = KNNModule(prob.knn, offset=lower, scale=upper - lower, lo=blo, hi=bhi).to(dev).eval()
    fmodel = fb.PyTorchModel(module, bounds=(0.0, 1.0), device=dev)
    U = np.clip((prob.X_test[idx] - lower) / (upper - lower), 0.0, 1.0)
    starts = _starting_points(prob, module, idx, U, atk)
    has = np.flatnonzero(np.isfinite(starts[:, 0]))
    cands = [[] for _ in idx]
    info = dict(no_starting_point=int(len(idx) - len(has)), batches=0, batch_errors=0)
    fb_attack = atk._foolbox_attack()
    done = len(idx) - len(has)
    if progress is not None and done:
        progress(done, len(idx))
    devices = []  # CUDA device indices whose RNG is forked too
    if dev.type == "cuda":
        devices = [dev.index if dev.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(atk.random_state)
        for s in range(0, len(has), atk.batch_size):
            sel = has[s : s + atk.batch_size]
            out = _foolbox_batch(fb_attack, fmodel, module, U[sel], starts[sel], prob.yt_enc[idx[sel]], dev, info)
            for r, t in enumerate(sel):
                if out[r] is not None:
                    x = prob.X_test[idx[t]]
                    z = out[r]
                    # the model's own output first; nudged outwards along the ray as a fallback
                    cands[t] = [z] + [x + (1 + e) * (z - x) for e in (1e-9, 1e-7, 1e-5)]
            done += len(sel)
            info["batches"] += 1
            if progress is not None:
                progress(done, len(idx))
    return prob.clip_to_box(cands), info


def _foolbox_batch(fb_attack, fmodel, module, U, S, labels, dev, info):
    """Run foolbox on one batch; a batch that errors is retried point by point, so one bad
    point never costs the others.  Returns input-space points (None where it failed)."""
    fb = _foolbox()
    Ut = torch.as_tensor(U, device=dev)
    St = torch.as_tensor(S, device=dev)
    lab = torch.as_tensor(labels, device=dev)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            raw, _, _ = fb_attack(fmodel, Ut, fb.criteria.Misclassification(lab), epsilons=None, starting_points=St)
    except (ValueError, AssertionError, RuntimeError) as exc:
        info["batch_errors"] += 1
        errors = info.setdefault("errors", [])
        if len(errors) < 10:
            errors.append(f"{type(exc).__name__}: {exc}")
        if len(U) == 1:
            return [None]
        return [r for t in range(len(U)) for r in
                _foolbox_batch(fb_attack, fmodel, module, U[t : t + 1], S[t : t + 1], labels[t : t + 1], dev, info)]
    with torch.no_grad():
        X = module.to_input(raw).cpu().numpy()
    return [X[r] if np.all(np.isfinite(X[r])) else None for r in range(len(U))]
