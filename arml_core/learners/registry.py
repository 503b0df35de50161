"""The learners by key: one table of key, display name, colour, factory and default
random state. ``make_learner``, ``LEARNERS`` (key -> display name) and ``PALETTE``
(key -> colour, for ``arml_core.plots``) are read from it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .arml import ARML
from .baselines import Euclidean, lfda_class, metric_learn_class
from .spectral import SpectralDefence

DEFAULT_RANDOM_STATE = 42


@dataclass(frozen=True)
class LearnerSpec:
    """One learner: ``factory()`` returns its class (a metric-learn one is imported only
    then); ``random_state`` is set unless the caller gives one (None: the learner has
    no random state)."""

    key: str
    display: str
    colour: str
    factory: Callable[[], type]
    random_state: int | None = DEFAULT_RANDOM_STATE


REGISTRY = {spec.key: spec for spec in (
    LearnerSpec("euclidean", "Euclidean", "#636363", lambda: Euclidean, random_state=None),
    LearnerSpec("nca", "NCA", "#1f77b4", metric_learn_class("NCA")),
    LearnerSpec("lmnn", "LMNN", "#ff7f0e", metric_learn_class("LMNN")),
    LearnerSpec("itml", "ITML", "#2ca02c", metric_learn_class("ITML_Supervised")),
    LearnerSpec("lfda", "LFDA", "#9467bd", lfda_class, random_state=None),
    LearnerSpec("arml", "ARML", "#d62728", lambda: ARML),
    LearnerSpec("spectral", "Spectral defence", "#17becf", lambda: SpectralDefence),
)}
LEARNERS = {key: spec.display for key, spec in REGISTRY.items()}
PALETTE = {key: spec.colour for key, spec in REGISTRY.items()}


def display_name(method: str) -> str:
    """The display name of a learner key; anything else (a file name) as it is."""
    return LEARNERS.get(method, method)


def make_learner(name: str, **params):
    """A fresh, unfitted learner by name (see ``LEARNERS``), with a fixed random state."""
    key = str(name).strip().lower()
    spec = REGISTRY.get(key)
    if spec is None:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(LEARNERS)}")
    if spec.random_state is not None:
        params.setdefault("random_state", spec.random_state)
    try:
        return spec.factory()(**params)
    except TypeError as exc:  # an unknown keyword
        raise ValueError(f"bad parameter for {spec.display}: {exc}") from None
