"""The built-in data sets: no files needed.

``figure1`` (a hand-made 2-D toy in the spirit of Figure 1 of the ARML paper),
``moons``, ``circles`` and ``blobs`` (scikit-learn generators, seeded) and ``iris``,
``wine``, ``breast_cancer`` and ``digits`` (the copies bundled with scikit-learn).
Except ``figure1``, whose train and test points are fixed, each is split
:data:`BUILTIN_TEST_SIZE` held out, stratified and seeded, into a :class:`_Raw`
that ``prepare`` preprocesses like every other source.

See ``ARML_NOTES.md`` section 1 for the setting.
"""
from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

from .readers import _Raw
from .sources import IMAGE_SHAPES

#: Fraction of a built-in or user data set held out as the test split.
BUILTIN_TEST_SIZE = 0.3


def _figure1() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The ``figure1`` toy, in the spirit of Figure 1 of Wang et al. (NeurIPS 2020).

    Two classes in the unit square, separated along ``x`` at ``x = 0.5`` but
    interleaved along ``y``. Training points (13):

    * class 0: a column at ``x = 0.45``, ``y = 0, 0.2, ..., 1.0`` (6 points),
      plus an anchor ``(0, 0.5)``;
    * class 1: a column at ``x = 0.55``, ``y = 0.1, 0.3, ..., 0.9`` (5 points),
      plus an anchor ``(1, 0.5)``.

    The columns are 0.1 apart in ``x`` while points of one class are 0.2 apart
    in ``y``, so under the Euclidean metric a point just left of the boundary
    at the height of a class-1 point is nearer to class 1. Test points (6):
    ``(0.47, 0.1)`` and ``(0.47, 0.5)`` (class 0), ``(0.53, 0.4)`` and
    ``(0.53, 0.8)`` (class 1) -- all four misclassified by Euclidean 1-NN and
    correct once ``x`` is stretched (e.g. ``M = diag(16, 1)``) -- plus the easy
    ``(0.1, 0.3)`` (class 0) and ``(0.9, 0.7)`` (class 1). The training
    points already span ``[0, 1]`` in both coordinates, so min-max scaling
    leaves them unchanged.
    """
    c0 = [(0.45, y) for y in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)] + [(0.0, 0.5)]
    c1 = [(0.55, y) for y in (0.1, 0.3, 0.5, 0.7, 0.9)] + [(1.0, 0.5)]
    X_train = np.array(c0 + c1, dtype=np.float64)
    y_train = np.array([0] * len(c0) + [1] * len(c1), dtype=np.int64)
    X_test = np.array(
        [(0.47, 0.1), (0.47, 0.5), (0.53, 0.4), (0.53, 0.8), (0.1, 0.3), (0.9, 0.7)],
        dtype=np.float64,
    )
    y_test = np.array([0, 0, 1, 1, 0, 1], dtype=np.int64)
    return X_train, y_train, X_test, y_test


def _load_builtin(name: str, seed: int) -> _Raw:
    """The raw splits of built-in ``name`` (generated with ``seed``, then split 70/30 stratified)."""
    from sklearn import datasets as skd

    if name == "figure1":
        X_tr, y_tr, X_te, y_te = _figure1()
        return _Raw(
            name=name, X_train=X_tr, y_train=y_tr, X_test=X_te, y_test=y_te,
            head=(
                "Built-in 'figure1': a hand-made 2-D two-class toy in the spirit of Figure 1 of "
                "Wang et al. (NeurIPS 2020): two columns of points 0.1 apart in x, interleaved "
                "along y, so stretching the x axis changes which class is nearest. Fixed 13 "
                "training and 6 test points (no random split)."
            ),
            source="builtin:figure1", feature_names=["x", "y"],
        )

    feature_names: list[str] | None = None
    if name == "moons":
        X, y = skd.make_moons(n_samples=300, noise=0.25, random_state=seed)
        head = "Built-in 'moons': scikit-learn make_moons, 300 points, noise 0.25"
        feature_names = ["x1", "x2"]
    elif name == "circles":
        X, y = skd.make_circles(n_samples=300, noise=0.1, factor=0.5, random_state=seed)
        head = "Built-in 'circles': scikit-learn make_circles, 300 points, noise 0.1, factor 0.5"
        feature_names = ["x1", "x2"]
    elif name == "blobs":
        X, y = skd.make_blobs(n_samples=300, centers=3, n_features=2, cluster_std=1.5,
                              random_state=seed)
        head = "Built-in 'blobs': scikit-learn make_blobs, 300 points, 3 centres, std 1.5"
        feature_names = ["x1", "x2"]
    else:
        loader = {
            "iris": skd.load_iris,
            "wine": skd.load_wine,
            "breast_cancer": skd.load_breast_cancer,
            "digits": skd.load_digits,
        }[name]
        bunch = loader()
        X, y = bunch.data, bunch.target
        if name != "digits":
            feature_names = [str(f) for f in bunch.feature_names]
        head = (
            f"Built-in '{name}': scikit-learn bundled copy of the UCI {name.replace('_', ' ')} "
            f"data set, {len(y)} points"
        )
    if name in ("moons", "circles", "blobs"):
        head += f" (generated with seed {seed})"
    X_tr, X_te, y_tr, y_te = train_test_split(
        X, y, test_size=BUILTIN_TEST_SIZE, stratify=y, random_state=seed
    )
    head += (
        f"; split {1 - BUILTIN_TEST_SIZE:.0%}/{BUILTIN_TEST_SIZE:.0%} stratified into "
        f"{len(y_tr)} training and {len(y_te)} test points (seed {seed})."
    )
    return _Raw(
        name=name, X_train=X_tr, y_train=y_tr, X_test=X_te, y_test=y_te, head=head,
        source=f"builtin:{name}", feature_names=feature_names,
        image_shape=IMAGE_SHAPES.get(name),
    )
