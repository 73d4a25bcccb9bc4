"""Selection strategies and their registry.

Each strategy takes a :class:`SelectionInputs` (validated arrays and options) and returns a
:class:`~activekd.selection.result.SelectionResult` (picked row ids in order, one score per pick,
stats, backend; ``select_batch`` fills in the strategy name and the time taken). Scores:

* ``pcoreset`` / ``coreset``: L2 distance to the nearest centre at pick time (k-center).
* ``entropy``: predictive entropy (nats); ``margin``: top-1 minus top-2 probability (smallest
  first); ``least_confidence``: 1 - max probability. Ties go to the lowest row id.
* ``badge``: gradient-embedding distance to the nearest chosen centre at pick time (first pick: its
  gradient norm).
* ``class_balanced``: the normalised weight of the pick's predicted class.
* ``random``: no score (0.0).
* ``typiclust``: the pick's typicality within its k-means cluster (1 / mean L2 distance to its
  nearest neighbours); ``probcover``: rows newly covered by the pick's ball (0 for the random
  fill once everything is covered). See :mod:`activekd.selection.coverage`.
* ``typiclust_pcoreset``: typiclust's scores before the switch, pcoreset's after;
  ``pcoreset_typical``: pcoreset's (distance to the nearest centre among the candidates).

Strategy parameters (``select_batch(..., params=)``, ``SelectionOptions.strategy_params`` on the
wire) are floats; each registry entry lists its parameters with their defaults
(``StrategyInfo.params``) and ``PARAM_RULES`` says which values each one accepts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from activekd.arrays import iter_row_chunks
from activekd.errors import InvalidArgument, shown
from activekd.selection.badge import badge_select
from activekd.selection.coverage import (
    kmeans_labels,
    neighbour_scan,
    normalized,
    probcover_select,
    purity_radius,
    typicality,
    typiclust_clusters,
    typiclust_select,
)
from activekd.selection.kcenter import ProgressFn, kcenter_greedy
from activekd.selection.result import SelectionResult
from activekd.selection.validation import ParamRule

_CHUNK_BYTES = 32 << 20


@dataclass
class SelectionInputs:
    """What a strategy receives: arrays as given (ndarray or memmap) and validated ids."""

    budget: int
    seed: int
    eligible: np.ndarray  # sorted row ids that may be picked
    labeled: np.ndarray
    exclude: np.ndarray
    probs: np.ndarray | None = None
    features: np.ndarray | None = None
    labels: np.ndarray | None = None
    prune: bool = True
    device: str = "cpu"
    backend: str = "auto"
    threads: int | None = None
    progress: ProgressFn | None = None
    #: the strategy's parameters, validated, defaults filled in (``StrategyInfo.params``)
    params: dict[str, float] = field(default_factory=dict)


StrategyFn = Callable[[SelectionInputs], SelectionResult]


@dataclass(frozen=True)
class StrategyInfo:
    """Registry entry: what ListStrategies reports."""

    name: str
    description: str
    needs_probs: bool
    needs_features: bool
    #: parameter name -> default value (empty: the strategy takes no parameters)
    params: dict[str, float] = field(default_factory=dict)
    #: its features are by default the teacher's embedding of the pool (label-free, there before
    #: any label), not the student's: the loop and the experiment service pass those
    teacher_features: bool = False
    #: the probabilities the loop and the experiment service pass (``PROBS_SOURCES``): the
    #: student's combined prediction, its CE head's softmax, or the teacher's
    probs_source: str = "combined"


#: What a strategy's probabilities can be: the student's combined prediction (the paper's
#: PCoreSet input), the softmax of its CE head alone, or the round's teacher probabilities.
PROBS_SOURCES: tuple[str, ...] = ("combined", "ce", "teacher")


STRATEGIES: dict[str, StrategyFn] = {}
STRATEGY_INFO: dict[str, StrategyInfo] = {}

#: What each strategy parameter accepts (shared by every strategy that takes it).
PARAM_RULES: dict[str, ParamRule] = {
    "k_nn": ParamRule(1, 1000, integer=True, doc="neighbours of the typicality kNN"),
    "max_clusters": ParamRule(1, 1_000_000, integer=True, doc="cap on the k-means clusters"),
    "min_cluster_size": ParamRule(1, 1_000_000, integer=True, doc="smaller clusters come last"),
    "radius": ParamRule(0, 2, doc="ball radius on the unit sphere; 0 = purity heuristic"),
    "alpha": ParamRule(0, 1, lo_open=True, doc="purity the radius heuristic requires"),
    "num_classes": ParamRule(0, 100_000, integer=True, doc="k-means K; 0 = columns of probs"),
    "max_neighbors": ParamRule(1, 100_000, integer=True, doc="cap on the rows of one ball"),
    "switch_per_class": ParamRule(0, 1_000_000, doc="labels per class before pcoreset takes over"),
    "candidate_fraction": ParamRule(0, 1, lo_open=True, doc="most typical share kept"),
}


def register(
    name: str,
    description: str,
    *,
    needs_probs: bool,
    needs_features: bool,
    params: Mapping[str, float] | None = None,
    teacher_features: bool = False,
    probs_source: str = "combined",
) -> Callable[[StrategyFn], StrategyFn]:
    """Decorator adding a strategy to ``STRATEGIES`` / ``STRATEGY_INFO``; ``params``: its
    parameters' defaults (each name must have a rule in ``PARAM_RULES``)."""
    defaults = {k: float(v) for k, v in (params or {}).items()}
    unknown = set(defaults) - set(PARAM_RULES)
    if unknown:
        raise ValueError(f"no PARAM_RULES entry for {sorted(unknown)}")
    if probs_source not in PROBS_SOURCES:
        raise ValueError(f"probs_source {probs_source!r}: use one of {PROBS_SOURCES}")

    def deco(fn: StrategyFn) -> StrategyFn:
        STRATEGIES[name] = fn
        STRATEGY_INFO[name] = StrategyInfo(
            name, description, needs_probs, needs_features, defaults, teacher_features, probs_source
        )
        return fn

    return deco


def probs_source(strategy: str) -> str:
    """The probabilities ``strategy`` selects on (its registry entry's ``probs_source``;
    ``combined`` for a name the registry does not know)."""
    info = STRATEGY_INFO.get(strategy)
    return info.probs_source if info is not None else "combined"


def available_strategies() -> list[str]:
    """Names of the registered strategies, sorted."""
    return sorted(STRATEGIES)


def validate_strategy(strategy: Any) -> str:
    """The name of a registered strategy, or InvalidArgument listing the valid ones."""
    if not isinstance(strategy, str) or strategy not in STRATEGIES:
        raise InvalidArgument(
            f"unknown strategy {shown(strategy)}: use one of {', '.join(sorted(STRATEGIES))}",
            field="strategy",
        )
    return strategy


def _req(x: np.ndarray | None) -> np.ndarray:
    assert x is not None  # guaranteed by validation (needs_* flags)
    return x


def _centres(inp: SelectionInputs) -> np.ndarray:
    return np.union1d(inp.labeled, inp.exclude).astype(np.int64)


@register(
    "pcoreset",
    "PCoreSet (the paper's method): greedy farthest-first (k-center) in probability space, L2, "
    "seeded with the labeled (and excluded) rows' probabilities; no labeled rows: start from the "
    "row farthest from the pool mean",
    needs_probs=True,
    needs_features=False,
)
def pcoreset(inp: SelectionInputs) -> SelectionResult:
    return _kcenter(_req(inp.probs), inp, normalize=False)


# PCoreSet's named variants (issue #12): the same engine and seeding on other probabilities.
# ``pcoreset`` itself stays exactly the paper's method.
register(
    "pcoreset_teacher",
    "PCoreSet on the teacher's probabilities: the same greedy k-center, in the teacher's "
    "probability space, which exists before any student (the cold start); the loop and the "
    "experiment service pass the round's teacher probabilities (adapted when the experiment "
    "adapts its teacher; the trainer stores them as the pool <experiment>/round-<r>/teacher), a "
    "SelectBatch caller passes them as probs",
    needs_probs=True,
    needs_features=False,
    probs_source="teacher",
)(pcoreset)


register(
    "pcoreset_ce",
    "PCoreSet on the CE head alone: the same greedy k-center on the softmax of the student's "
    "label-trained head, without the KD head's teacher-shaped half; the loop and the experiment "
    "service pass it (the trainer's scored pool holds it as ce_probs)",
    needs_probs=True,
    needs_features=False,
    probs_source="ce",
)(pcoreset)


@register(
    "coreset",
    "Core-set (Sener & Savarese 2018): greedy k-center on features with cosine geometry, i.e. L2 "
    "on L2-normalised features (d = sqrt(2 - 2 cos))",
    needs_probs=False,
    needs_features=True,
)
def coreset(inp: SelectionInputs) -> SelectionResult:
    return _kcenter(_req(inp.features), inp, normalize=True)


def _kcenter(
    x: np.ndarray, inp: SelectionInputs, *, normalize: bool, centres: np.ndarray | None = None
) -> SelectionResult:
    """Greedy k-center on ``x`` with the request's settings; ``centres`` default: the labeled
    and excluded rows (rows of ``x``)."""
    centres = _centres(inp) if centres is None else centres
    return kcenter_greedy(
        x,
        inp.budget,
        centres=centres,
        normalize=normalize,
        prune=inp.prune,
        device=inp.device,
        backend=inp.backend,
        threads=inp.threads,
        progress=inp.progress,
    )


def row_scores(
    probs: np.ndarray, rows: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """``fn`` applied to float64 chunks of ``probs[rows]``."""
    out = np.empty(len(rows), dtype=np.float64)
    c = probs.shape[1]
    for sl in iter_row_chunks(len(rows), c * 8, _CHUNK_BYTES):
        out[sl] = fn(np.asarray(probs[rows[sl]], dtype=np.float64))
    return out


def top_positions(scores: np.ndarray, budget: int, *, largest: bool) -> np.ndarray:
    """Positions of the ``budget`` best scores, best first; ties to the lowest position."""
    key = -scores if largest else scores
    if budget < len(key):
        kth = np.partition(key, budget - 1)[budget - 1]
        cand = np.flatnonzero(key <= kth)  # includes every tie at the cut, in position order
    else:
        cand = np.arange(len(key))
    order = np.argsort(key[cand], kind="stable")
    return cand[order[:budget]]


def _entropy(p: np.ndarray) -> np.ndarray:
    logp = np.log(np.where(p > 0, p, 1.0))
    return -np.einsum("ij,ij->i", p, logp)


def _margin(p: np.ndarray) -> np.ndarray:
    top2 = np.partition(p, p.shape[1] - 2, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def _least_confidence(p: np.ndarray) -> np.ndarray:
    return 1.0 - p.max(axis=1)


#: The row-local uncertainty strategies: name -> (each row's score, whether higher scores are
#: picked first). A row's score depends on that row alone, so they shard exactly
#: (``activekd.distributed.ray_rowwise``: each shard's own top, merged by ``top_positions``).
ROW_SCORES: dict[str, tuple[Callable[[np.ndarray], np.ndarray], bool]] = {
    "entropy": (_entropy, True),
    "margin": (_margin, False),
    "least_confidence": (_least_confidence, True),
}


def _uncertainty(inp: SelectionInputs, name: str) -> SelectionResult:
    fn, largest = ROW_SCORES[name]
    s = row_scores(_req(inp.probs), inp.eligible, fn)
    pos = top_positions(s, inp.budget, largest=largest)
    return SelectionResult(inp.eligible[pos], s[pos])


@register(
    "entropy",
    "Maximum predictive entropy -sum p log p (nats), highest first",
    needs_probs=True,
    needs_features=False,
)
def entropy(inp: SelectionInputs) -> SelectionResult:
    return _uncertainty(inp, "entropy")


@register(
    "margin",
    "Smallest margin between the top-1 and top-2 probabilities first; score = the margin",
    needs_probs=True,
    needs_features=False,
)
def margin(inp: SelectionInputs) -> SelectionResult:
    return _uncertainty(inp, "margin")


@register(
    "least_confidence",
    "Least confidence 1 - max p, highest first",
    needs_probs=True,
    needs_features=False,
)
def least_confidence(inp: SelectionInputs) -> SelectionResult:
    return _uncertainty(inp, "least_confidence")


@register(
    "random",
    "Uniform random sample without replacement (numpy default_rng(seed)); score 0",
    needs_probs=False,
    needs_features=False,
)
def random(inp: SelectionInputs) -> SelectionResult:
    rng = np.random.default_rng(inp.seed)
    pos = rng.choice(len(inp.eligible), size=inp.budget, replace=False)
    return SelectionResult(inp.eligible[pos], np.zeros(inp.budget))


@register(
    "badge",
    "BADGE (Ash et al. 2020): k-means++ seeding on gradient embeddings (onehot(argmax p) - p) x f, "
    "computed in factorised form; first centre = largest gradient norm; seeded",
    needs_probs=True,
    needs_features=True,
)
def badge(inp: SelectionInputs) -> SelectionResult:
    return badge_select(_req(inp.probs), _req(inp.features), inp.eligible, inp.budget, inp.seed)


def predicted_classes(probs: np.ndarray, rows: np.ndarray) -> np.ndarray:
    out = np.empty(len(rows), dtype=np.int64)
    for sl in iter_row_chunks(len(rows), probs.shape[1] * probs.itemsize, _CHUNK_BYTES):
        out[sl] = np.argmax(probs[rows[sl]], axis=1)
    return out


def class_quotas(
    counts: np.ndarray, available: np.ndarray, budget: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class quotas inverse to labeled counts: weight w_c = 1 / (n_c + 1) over classes with
    available rows; quota = budget * w_c / sum(w), capped at what is available (the excess is
    re-spread over the rest), rounded by largest remainder (ties: higher weight, then lower class).

    Returns (quotas, normalised weights). ``budget`` must not exceed ``available.sum()``.
    """
    c = len(counts)
    w = np.where(available > 0, 1.0 / (counts + 1.0), 0.0)
    weights = w / w.sum()
    quota = np.zeros(c, dtype=np.int64)
    target = np.zeros(c, dtype=np.float64)
    open_ = available > 0
    left = float(budget)
    while True:  # fix classes whose proportional share exceeds what they have
        target[open_] = left * w[open_] / w[open_].sum()
        over = open_ & (target >= available)
        if not over.any():
            break
        target[over] = available[over]
        left -= float(available[over].sum())
        open_ &= ~over
        if not open_.any():
            break
    quota[:] = np.floor(target + 1e-9).astype(np.int64)
    quota = np.minimum(quota, available)
    rest = budget - int(quota.sum())
    if rest > 0:
        frac = target - quota
        room = quota < available
        order = np.lexsort((np.arange(c), -w, -frac))
        for cls in order:
            if rest == 0:
                break
            if room[cls]:
                quota[cls] += 1
                rest -= 1
    return quota, weights


@register(
    "class_balanced",
    "Random within each predicted class (argmax p), with per-class quotas inverse to the labeled "
    "class counts (labels if given, else argmax p of labeled and excluded rows); seeded",
    needs_probs=True,
    needs_features=False,
)
def class_balanced(inp: SelectionInputs) -> SelectionResult:
    probs = _req(inp.probs)
    known = inp.labels if inp.labels is not None else predicted_classes(probs, inp.labeled)
    return class_balanced_picks(
        predicted_classes(probs, inp.eligible),
        known,
        predicted_classes(probs, inp.exclude),
        probs.shape[1],
        inp.eligible,
        inp.budget,
        inp.seed,
    )


def class_balanced_picks(
    pred: np.ndarray,
    known: np.ndarray,
    pending: np.ndarray,
    c: int,
    eligible: np.ndarray,
    budget: int,
    seed: int,
) -> SelectionResult:
    """``class_balanced`` from the predicted class of each eligible row (``pred``, in the order
    of ``eligible``), the classes of the labeled rows (``known``) and of the excluded ones
    (``pending``): all it reads of the pool, so a sharded pool sends only these."""
    counts = np.bincount(known, minlength=c).astype(np.float64)
    counts += np.bincount(pending, minlength=c)  # pending labels
    available = np.bincount(pred, minlength=c)
    quota, weights = class_quotas(counts, available, budget)
    rng = np.random.default_rng(seed)
    by_class = np.argsort(pred, kind="stable")
    starts = np.searchsorted(pred[by_class], np.arange(c))
    chosen: list[np.ndarray] = []
    ranks: list[np.ndarray] = []
    classes: list[np.ndarray] = []
    for cls in np.flatnonzero(quota):
        members = by_class[starts[cls] : starts[cls] + available[cls]]
        take = rng.choice(members, size=int(quota[cls]), replace=False)
        chosen.append(take)
        ranks.append(np.arange(len(take)))
        classes.append(np.full(len(take), cls))
    pos = np.concatenate(chosen)
    rank = np.concatenate(ranks)
    cls_arr = np.concatenate(classes)
    # round-robin order: every prefix of the batch is itself balanced
    order = np.lexsort((cls_arr, -weights[cls_arr], rank))
    pos, cls_arr = pos[order], cls_arr[order]
    stats = {"classes_picked": float(len(np.unique(cls_arr)))}
    return SelectionResult(eligible[pos], weights[cls_arr], stats)


# --- coverage strategies (low budgets) and PCoreSet hybrids ------------------------------------
_TYPICLUST_PARAMS = {"k_nn": 20, "max_clusters": 500, "min_cluster_size": 5}


@register(
    "typiclust",
    "TypiClust (Hacohen et al. 2022): seeded faiss k-means of the L2-normalised features into "
    "min(labeled + excluded + budget, max_clusters) clusters; each pick takes the cluster with "
    "the fewest labeled/excluded/picked rows (ties: largest, then lowest id; clusters under "
    "min_cluster_size last) and its most typical eligible row (typicality = 1 / mean L2 distance "
    "to the k_nn nearest rows of the cluster)",
    needs_probs=False,
    needs_features=True,
    teacher_features=True,
    params=_TYPICLUST_PARAMS,
)
def typiclust(inp: SelectionInputs) -> SelectionResult:
    return _typiclust(inp, normalized(_req(inp.features)))


def _typiclust(inp: SelectionInputs, xn: np.ndarray) -> SelectionResult:
    p = inp.params
    k = typiclust_clusters(len(inp.labeled), len(inp.exclude), inp.budget, p["max_clusters"])
    clusters = kmeans_labels(xn, k, inp.seed)
    res = typiclust_select(
        xn,
        clusters,
        inp.eligible,
        inp.budget,
        k_nn=int(p["k_nn"]),
        min_cluster_size=int(p["min_cluster_size"]),
    )
    res.stats["kmeans_k"] = float(k)
    return res


@register(
    "probcover",
    "ProbCover (Yehuda et al. 2022): greedy max coverage of radius-balls on the L2-normalised "
    "features (balls capped at max_neighbors rows); rows covered by labeled/excluded rows' balls "
    "are removed first; radius 0 = the purity heuristic: the largest grid value (0.01 steps) at "
    "which >= alpha of the balls are pure w.r.t. a seeded k-means into num_classes clusters "
    "(0: probs' columns); random fill once all is covered",
    needs_probs=False,
    needs_features=True,
    teacher_features=True,
    params={"radius": 0.0, "alpha": 0.95, "num_classes": 0, "max_neighbors": 256},
)
def probcover(inp: SelectionInputs) -> SelectionResult:
    p = inp.params
    k = int(p["num_classes"]) or (int(inp.probs.shape[1]) if inp.probs is not None else 0)
    if not p["radius"] and k < 2:
        raise InvalidArgument(
            "probcover chooses its radius from k-means clusters, one per class: send probs (their "
            "columns are the classes), params num_classes >= 2, or params radius > 0",
            field="params",
        )
    xn = normalized(_req(inp.features))
    clusters = kmeans_labels(xn, k, inp.seed) if k >= 2 else None
    nbr, ndist, other = neighbour_scan(xn, int(p["max_neighbors"]), clusters)
    if p["radius"]:
        radius = float(p["radius"])
        purity = float((other > radius).mean()) if other is not None else -1.0
    else:
        assert other is not None
        radius, purity = purity_radius(other, float(p["alpha"]))
    res = probcover_select(nbr, ndist, radius, inp.eligible, inp.budget, inp.seed)
    res.stats.update(
        purity=purity,
        purity_clusters=float(k if clusters is not None else 0),
        radius_from_heuristic=float(not p["radius"]),
    )
    return res


@register(
    "typiclust_pcoreset",
    "Hybrid: typiclust (same parameters) while labeled + excluded rows < switch_per_class x the "
    "number of classes (probs' columns), then pcoreset exactly",
    needs_probs=True,
    needs_features=True,
    teacher_features=True,
    params={"switch_per_class": 3, **_TYPICLUST_PARAMS},
)
def typiclust_pcoreset(inp: SelectionInputs) -> SelectionResult:
    c = _req(inp.probs).shape[1]
    cold = len(inp.labeled) + len(inp.exclude) < inp.params["switch_per_class"] * c
    res = _typiclust(inp, normalized(_req(inp.features))) if cold else pcoreset(inp)
    res.stats["typiclust_phase"] = float(cold)
    return res


@register(
    "pcoreset_typical",
    "Hybrid: pcoreset (same centres, L2 in probability space) with picks restricted to the "
    "ceil(candidate_fraction x eligible) most typical eligible rows (at least the budget; "
    "typicality = 1 / mean L2 distance to the k_nn nearest rows of the whole pool, L2-normalised "
    "features); no centres: starts from the candidate farthest from the candidates' mean",
    needs_probs=True,
    needs_features=True,
    teacher_features=True,
    params={"candidate_fraction": 0.5, "k_nn": 20},
)
def pcoreset_typical(inp: SelectionInputs) -> SelectionResult:
    probs = _req(inp.probs)
    el = inp.eligible
    n_cand = max(inp.budget, math.ceil(inp.params["candidate_fraction"] * len(el) - 1e-9))
    if n_cand >= len(el):
        res = _kcenter(probs, inp, normalize=False)
    else:
        xn = normalized(_req(inp.features))
        typ = typicality(xn, int(inp.params["k_nn"]), queries=el)
        cand = np.sort(el[top_positions(typ, n_cand, largest=True)])
        centres = _centres(inp)
        sub = np.union1d(centres, cand)  # sorted: position order = row order (ties kept)
        res = _kcenter(
            np.ascontiguousarray(probs[sub]),
            inp,
            normalize=False,
            centres=np.searchsorted(sub, centres),
        )
        res.indices = sub[res.indices]
    res.stats["candidates"] = float(min(n_cand, len(el)))
    return res


__all__ = [
    "PARAM_RULES",
    "ROW_SCORES",
    "STRATEGIES",
    "STRATEGY_INFO",
    "SelectionInputs",
    "StrategyFn",
    "StrategyInfo",
    "available_strategies",
    "class_balanced_picks",
    "class_quotas",
    "predicted_classes",
    "probs_source",
    "register",
    "row_scores",
    "top_positions",
    "validate_strategy",
]
