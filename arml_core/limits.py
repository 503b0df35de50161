"""What one user file may cost, and what one fit will cost.

:class:`Limits` holds the caps the readers (``data.readers``, ``persistence.load_metric``)
check *before* they allocate: the bytes of a file (as given and again after
decompression), its points, its features and the entries of the dense matrix it
becomes. Every refusal is a ``ValueError`` that names the limit and how to go past it:
``load_file(..., limits=Limits(max_features=10_000))`` or ``load_metric(...,
limits=...)`` for one call, :func:`set_default_limits` for the process, and
``--max-bytes/--max-points/--max-features/--max-entries`` on the command line. The
defaults (:data:`DEFAULT_LIMITS`) hold the paper's data sets with room to spare (MNIST:
70,000 x 784) and bound one upload at 50 MiB read and about 160 MB of float64.

:func:`estimate_fit_seconds` is a cost model of one fit with the app's settings
(ARML: 300 epochs, learning rate 1e-2, 10 candidates), measured on one core of this
project's CPU machine by ``benchmarks/bench_fit_cost.py`` (which prints the table and
the constants below again); see ``_FIT_COST``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

#: The command-line flag of each limit.
FLAGS = {"max_bytes": "--max-bytes", "max_points": "--max-points", "max_features": "--max-features",
         "max_dense_entries": "--max-entries"}


@dataclass(frozen=True)
class Limits:
    """Caps on one file. ``max_bytes``: the file as read and after decompression;
    ``max_points``: rows; ``max_features``: columns (for a LIBSVM file, its largest
    index); ``max_dense_entries``: points x features of the dense matrix (8 bytes each)."""

    max_bytes: int = 50 * 2**20
    max_points: int = 100_000
    max_features: int = 4096
    max_dense_entries: int = 20_000_000

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Limits.{f.name} must be a positive integer, got {value!r}")

    def with_(self, **changes) -> "Limits":
        """A copy with some limits changed (None leaves a limit as it is)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def check(self, name: str, value: int, what: str) -> None:
        """Raise the ``ValueError`` of limit ``name`` when ``value`` is over it."""
        limit = getattr(self, name)
        if value > limit:
            raise ValueError(
                f"{what} is {value:,}, over the limit of {limit:,} (Limits.{name}). To go past it, pass "
                f"limits=Limits({name}=...) (library) or {FLAGS[name]} N (command line)."
            )


DEFAULT_LIMITS = Limits()
_default = DEFAULT_LIMITS


def set_default_limits(limits: Limits | None = None, **changes) -> Limits:
    """Set the limits used where none are passed (``None``: back to :data:`DEFAULT_LIMITS`);
    keyword arguments change single limits. Returns the previous default."""
    global _default
    previous = _default
    base = DEFAULT_LIMITS if limits is None and not changes else (limits or _default)
    if not isinstance(base, Limits):
        raise ValueError(f"expected a Limits object, got {type(base).__name__}")
    _default = base.with_(**changes)
    return previous


def get_limits(limits: Limits | None = None) -> Limits:
    """``limits``, else the process default (:func:`set_default_limits`)."""
    if limits is None:
        return _default
    if not isinstance(limits, Limits):
        raise ValueError(f"limits must be an arml_core.limits.Limits, got {type(limits).__name__}")
    return limits


# --------------------------------------------------------------------------- #
# The fit-time cost model
# --------------------------------------------------------------------------- #
#: ``seconds = c0 + c * n**p * d**q`` per method (n: training points, d: features),
#: fitted by ``benchmarks/bench_fit_cost.py``; see its table in the module docstring.
_FIT_COST: dict[str, tuple[float, float, float, float]] = {}


def estimate_fit_seconds(method: str, n_samples: int, n_features: int) -> float:
    """Seconds one fit of ``method`` takes on ``n_samples`` points of ``n_features``
    features with the app's settings, on one core of the machine the model was
    measured on (within a factor of about 3; a GPU makes ARML faster). Unknown methods
    (a saved metric) cost 0."""
    key = str(method).strip().lower()
    if key not in _FIT_COST:
        return 0.0
    n, d = max(int(n_samples), 1), max(int(n_features), 1)
    c0, c, p, q = _FIT_COST[key]
    return c0 + c * math.exp(p * math.log(n) + q * math.log(d))
