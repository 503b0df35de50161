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
the constants again); the measured table and the fitted constants are at ``_FIT_COST``.
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
#: ``seconds = c0 + a * n**p * d**q + b * d**r`` per method (n: training points, d:
#: features): a per-run overhead, the work per point and the work on d x d matrices,
#: fitted by ``benchmarks/bench_fit_cost.py`` (one core, nice'd, a shared 2-core machine:
#: repeated runs differ by up to 2x). Measured seconds, synthetic 3-class data, the app's
#: settings ("refused": LFDA needs more points per class than features):
#:
#:     n x d      euclidean       nca      lmnn      itml      lfda      arml
#:     30x768         0.001     1.971      24.5     3.828   refused      33.6
#:     50x4           0.000     0.010     2.875     0.943     0.001     1.625
#:     50x64          0.000     0.009     2.715     0.063   refused     1.005
#:     50x256         0.000     0.059     7.283     0.256   refused     7.422
#:     50x512         0.001     0.239      15.7     0.968   refused      35.2
#:     200x4          0.000     0.055     8.013     1.155     0.001     0.417
#:     200x64         0.000     0.024     4.972     0.046     0.003     1.991
#:     200x256        0.000     0.089     8.517     0.138   refused      11.8
#:     300x128            -         -         -         -     0.005         -
#:     600x512            -         -         -         -     0.096         -
#:     800x16         0.000     3.436      48.8     0.198     0.005     4.411
#:     900x768            -         -         -         -     0.227         -
#:     1600x16            -      14.7         -         -         -         -
#:     2000x16            -         -         -         -         -      14.6
#:     3000x64            -         -         -         -         -      68.0
#:     60x384         0.000     0.298     6.944     0.546   refused      14.2   (held out)
#:     100x128        0.000     0.027     2.488     0.068   refused     2.745   (held out)
#:     400x32         0.000     0.176      15.9     0.072     0.003     2.801   (held out)
#:     500x384            -         -         -         -     0.037         -   (held out)
#:     1200x32            -      16.6         -         -         -         -   (held out)
#:     1500x32            -         -         -         -         -      12.4   (held out)
#:
#: Every held-out fit is within a factor of 2.1 of the model, except sub-second NCA/ITML
#: fits (their iteration counts vary 10x with the data; within 0.5 s). Against the
#: project's own runs: ARML, 300 epochs, pendigits (7494 x 16) ~50 s, model 109 s; usps
#: (7291 x 256) ~380 s, model 974 s. Beyond the measured range (n <= 3000, d <= 768) it
#: extrapolates: meant to flag fits of minutes (LMNN on 10 x 5000: ~590 s), not to time them.
_FIT_COST: dict[str, tuple[float, float, float, float, float, float]] = {
    "euclidean": (2.97e-05, 3.51e-07, 0.0776, 1.13, 5.43e-13, 1.18),
    "nca": (0.0098, 1.04e-08, 2.88, 1.04e-15, 4.76e-12, 4),
    "lmnn": (2.48, 0.000177, 1.87, 1.57e-21, 0.000255, 1.72),
    "itml": (0.236, 2.14e-12, 0.00201, 1.74e-05, 9.83e-12, 4),
    "lfda": (0.00114, 6.85e-12, 3, 4.37e-27, 1.15e-07, 2.18),
    "arml": (0.747, 6.69e-06, 1.61, 0.806, 0.000218, 1.85),
}


def estimate_fit_seconds(method: str, n_samples: int, n_features: int) -> float:
    """Seconds one fit of ``method`` takes on ``n_samples`` points of ``n_features``
    features with the app's settings (ARML: 300 epochs, learning rate 1e-2), on one core
    of the machine the model was measured on: within a factor of about 3 in the measured
    range (see ``_FIT_COST``), an extrapolation beyond; a GPU makes ARML faster. Unknown
    methods (a saved metric) cost 0."""
    key = str(method).strip().lower()
    if key not in _FIT_COST:
        return 0.0
    n, d = max(int(n_samples), 1), max(int(n_features), 1)
    c0, a, p, q, b, r = _FIT_COST[key]
    return c0 + a * math.exp(p * math.log(n) + q * math.log(d)) + b * math.exp(r * math.log(d))
