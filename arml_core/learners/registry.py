"""The learners by key: one table of key, display name, colour, factory and default
random state. ``make_learner``, ``LEARNERS`` (key -> display name) and ``PALETTE``
(key -> colour, for ``arml_core.plots``) are read from it."""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from functools import partial
from typing import Callable

from .arml import ARML
from .baselines import Euclidean, baseline_class
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
    LearnerSpec("nca", "NCA", "#1f77b4", partial(baseline_class, "nca")),
    LearnerSpec("lmnn", "LMNN", "#ff7f0e", partial(baseline_class, "lmnn")),
    LearnerSpec("itml", "ITML", "#2ca02c", partial(baseline_class, "itml")),
    LearnerSpec("lfda", "LFDA", "#9467bd", partial(baseline_class, "lfda"), random_state=None),
    LearnerSpec("arml", "ARML", "#d62728", lambda: ARML),
    LearnerSpec("spectral", "Spectral defence", "#17becf", lambda: SpectralDefence),
)}
LEARNERS = {key: spec.display for key, spec in REGISTRY.items()}
PALETTE = {key: spec.colour for key, spec in REGISTRY.items()}


UPLOAD_PREFIX = "upload:"  # the app's key of a metric a user uploaded: "upload:<file name>"


def display_name(method: str) -> str:
    """The display name of a learner key, "Upload: <file>" for an uploaded metric's key;
    anything else (a file name) as it is."""
    if method.startswith(UPLOAD_PREFIX):
        return f"Upload: {method[len(UPLOAD_PREFIX):]}"
    base, sep, label = method.partition(VARIANT)
    if sep and base in LEARNERS:
        return f"{LEARNERS[base]} ({label})"
    return LEARNERS.get(method, method)


VARIANT = "~"  # another run of a learner with other settings: "arml~1000 ep, lr 0.001"


def variant_key(method: str, settings: dict) -> str:
    """The key of a run of ``method`` with non-current ``settings`` (ARML: epochs, learning
    rate, candidates, loss), shown beside the current one as "ARML (1000 ep, lr 0.001, ...)"."""
    if method == "arml":
        label = (f"{settings.get('n_epochs')} ep, lr {float(settings.get('learning_rate', 0)):g}, "
                 f"m {settings.get('n_candidates')}, {settings.get('loss')}")
    else:
        label = ", ".join(f"{k} {v}" for k, v in sorted(settings.items()) if k not in ("n_train", "seed"))
    return f"{method}{VARIANT}{label}"


def parameter_names(cls: type) -> list[str]:
    """The parameters of a learner class (its ``__init__``'s), in order."""
    if cls.__init__ is object.__init__:
        return []
    sig = inspect.signature(cls.__init__)
    return [p.name for p in sig.parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]


def make_learner(name: str, **params):
    """A fresh, unfitted learner by name (see ``LEARNERS``), with a fixed random state.

    Every parameter is checked here (what can be checked without the data; the rest in
    ``fit``): an unknown name or a bad value is a ValueError ``"bad parameter for
    <method>: ..."`` that names the parameter."""
    key = str(name).strip().lower()
    spec = REGISTRY.get(key)
    if spec is None:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(LEARNERS)}")
    cls = spec.factory()
    known = parameter_names(cls)
    unknown = [p for p in params if p not in known]
    if unknown:
        takes = f"its parameters are {', '.join(known)}" if known else "it takes none"
        raise ValueError(f"bad parameter for {spec.display}: it has no parameter {', '.join(map(repr, unknown))}; "
                         f"{takes}.")
    if spec.random_state is not None:
        params.setdefault("random_state", spec.random_state)
    try:
        est = cls(**params)
        if hasattr(est, "_validate_params"):
            est._validate_params()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"bad parameter for {spec.display}: {exc}") from None
    return est
