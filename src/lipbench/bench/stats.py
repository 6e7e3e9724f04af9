"""Paired speed-ups and their confidence interval.

Each pair is one sequential and one parallel run of the same audio, adjacent in time; its
speed-up is sequential seconds / parallel seconds. The headline is the MEDIAN of the pairs'
speed-ups with a percentile-bootstrap interval of that median: exact for n ≤ ``EXACT_MAX``
(every distinct resample, weighted by its multinomial probability), else ``RESAMPLES``
seeded resamples. Pairs are added until the interval is narrower than a target (relative to
the median) or a cap is reached.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from itertools import combinations_with_replacement

import numpy as np

CI_LEVEL = 0.95
EXACT_MAX = 8  # C(15, 8) = 6435 distinct resamples at n = 8
RESAMPLES = 20_000


def pair_ratio(sequential_s: float, parallel_s: float) -> float:
    """Speed-up of one pair: > 1 means parallel was faster."""
    if sequential_s <= 0 or parallel_s <= 0:
        raise ValueError(f"run times must be > 0, got {sequential_s} and {parallel_s}")
    return sequential_s / parallel_s


def bootstrap_distribution(values: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """The exact bootstrap distribution of the sample median: (medians, probabilities),
    sorted by median. Each distinct multiset of n draws (with replacement) has probability
    n! / ∏ counts! / n^n."""
    x = sorted(float(v) for v in values)
    n = len(x)
    lo, hi = (n - 1) // 2, n // 2
    dist: dict[float, float] = {}
    log_nn = n * math.log(n)
    # combinations_with_replacement yields sorted index tuples; x is sorted, so the
    # resample's median sits at the middle position(s)
    for combo in combinations_with_replacement(range(n), n):
        counts = Counter(combo).values()
        logp = math.lgamma(n + 1) - sum(math.lgamma(c + 1) for c in counts) - log_nn
        med = (x[combo[lo]] + x[combo[hi]]) / 2
        dist[med] = dist.get(med, 0.0) + math.exp(logp)
    meds = np.array(sorted(dist))
    return meds, np.array([dist[m] for m in meds])


def _quantile(meds: np.ndarray, probs: np.ndarray, q: float) -> float:
    """Smallest value whose cumulative probability reaches q (the inverted CDF)."""
    cdf = np.cumsum(probs)
    return float(meds[min(len(meds) - 1, int(np.searchsorted(cdf, q - 1e-12)))])


def median_ci(values: list[float], level: float = CI_LEVEL, seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval of the median (exact for small n, else seeded)."""
    if not values:
        raise ValueError("no values")
    lo_q, hi_q = (1 - level) / 2, 1 - (1 - level) / 2
    if len(values) <= EXACT_MAX:
        meds, probs = bootstrap_distribution(values)
        return _quantile(meds, probs, lo_q), _quantile(meds, probs, hi_q)
    x = np.asarray(values, dtype=float)
    idx = np.random.default_rng(seed).integers(0, len(x), size=(RESAMPLES, len(x)))
    meds = np.median(x[idx], axis=1)
    return (
        float(np.quantile(meds, lo_q, method="inverted_cdf")),
        float(np.quantile(meds, hi_q, method="inverted_cdf")),
    )


@dataclass(frozen=True)
class Interval:
    """The median speed-up of n pairs and its interval."""

    n: int
    median: float
    low: float
    high: float
    level: float = CI_LEVEL

    @property
    def rel_width(self) -> float:
        """Interval width as a fraction of the median (0.10 = the interval spans 10 %)."""
        return (self.high - self.low) / self.median if self.median > 0 else math.inf

    @property
    def verdict(self) -> str:
        if self.low > 1:
            return "parallel faster"
        if self.high < 1:
            return "parallel slower"
        return "no clear difference"

    def text(self) -> str:
        return f"{self.median:.2f}× [{self.low:.2f}, {self.high:.2f}], n = {self.n}"


def interval(ratios: list[float], level: float = CI_LEVEL, seed: int = 0) -> Interval:
    lo, hi = median_ci(ratios, level, seed)
    return Interval(len(ratios), float(np.median(ratios)), lo, hi, level)


def stop_reason(
    clean: int, contaminated: int, ratios: list[float], min_pairs: int, max_pairs: int,
    target: float, reruns: int,
) -> str | None:  # fmt: skip
    """Why a comparison needs no more pairs (None = measure another):
    "target" (interval narrow enough), "cap" (max_pairs clean pairs), "reruns" (more than
    ``reruns`` pairs were contaminated: measurable only with at least min_pairs clean ones)."""
    if clean >= min_pairs and interval(ratios).rel_width <= target:
        return "target"
    if clean >= max_pairs:
        return "cap"
    if contaminated > reruns:
        return "reruns"
    return None
