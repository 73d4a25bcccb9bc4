"""One trainer round as a library call: gather inputs, validate, train, checkpoint, score, evaluate.

The student's equivalent of :mod:`activekd.teacher.pool_job`: what the TrainerService runs (no
gRPC here). For round ``r`` of an experiment:

* **labels** come from the experiment's state in Redis (:class:`ExperimentStore`): every label
  except those of items selected in round ``r`` or later, so re-training an earlier round uses the
  labels that round had.
* **pools** come from the pool store. Ids left empty default to the experiment spec's: the pool is
  ``spec.pool_id`` (array ``images``, or feature vectors for the ``mlp`` backbone; the array name is
  the reserved config key ``input_array``); the teacher pool is the request's, else the round
  record's ``teacher_pool_id``, else ``spec.teacher_config["pool_id"]`` (array ``probs``, rows in
  the pool's item order or mapped by item id); the test pool (``images``/``labels``) is
  ``spec.test_pool_id``; teacher probabilities of the test items are optional
  (``spec.teacher_config["test_pool_id"]``).
* **teacher adaptation**: with ``spec.teacher_config["adaptation"] = "clap"`` the KD targets are
  not the teacher pool's ``probs`` but those of its linear head refitted on the round's labels
  (:class:`activekd.teacher.adapt.TeacherAdapter` from the head fitted to the zero-shot probs),
  computed on the teacher pool's ``features`` array (same item mapping as ``probs``).
* **student config**: ``StudentConfig`` defaults <- ``num_classes`` (spec class names, else the
  teacher matrix width) and seed ``round_seed(spec.seed, r)`` (:mod:`activekd.seeds`, as
  ``activekd.experiment.loop``) <- ``spec.student_config`` <- the request's ``seed`` <- request
  overrides. Unknown override keys are an ``InvalidArgument`` naming them; a bad experiment spec
  is a ``FailedPrecondition``.
* **checkpoint**: ``<root>/<experiment>/round-<r>.ckpt`` (see
  :mod:`activekd.student.checkpoint_registry`) written with the student library's atomic save
  (temp file + fsync + rename), so a crash mid-round leaves the previous checkpoint (or none) and
  re-running the round starts it cleanly. A NaN loss raises ``NonFiniteLossError`` (a
  ``FailedPrecondition`` carrying the step) and keeps the previous checkpoint.

Errors: unknown experiment -> ``NotFound``; missing inputs (labels, pools, arrays, checkpoint)
and inputs that do not fit together (labels outside the class range, labeled ids missing from the
pool, a teacher matrix with the wrong class count or non-probability rows) -> ``FailedPrecondition``
naming what and where; bad request values -> ``InvalidArgument``.

One process trains a given (experiment, round) at most once at a time (``Aborted`` otherwise);
two processes training the same round concurrently is not guarded against (the last rename wins).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from activekd.arrays import check_probabilities
from activekd.errors import (
    Aborted,
    ActiveKDError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    shown,
)
from activekd.ids import student_pool_id, teacher_targets_pool_id
from activekd.seeds import SEED_MODULUS, round_seed
from activekd.state.experiment_spec import DEFAULT_INPUT_ARRAY, INPUT_ARRAY_KEY
from activekd.state.experiments import Experiment, ExperimentStore
from activekd.store import PoolMeta, PoolStore
from activekd.student.backbones import BACKBONES
from activekd.student.checkpoint import load_student, save_checkpoint
from activekd.student.checkpoint_registry import CheckpointInfo, CheckpointRegistry
from activekd.student.config import StudentConfig
from activekd.student.data import validate_labels, validate_x
from activekd.student.errors import NonFiniteLossError
from activekd.student.scoring import evaluate, score_pool
from activekd.student.training import TrainEvent, train_round

log = logging.getLogger("activekd.student.round_job")

TEACHER_ARRAY = "probs"
TEACHER_FEATURES_ARRAY = "features"
LABELS_ARRAY = "labels"
TRAINER_KEYS: frozenset[str] = frozenset({INPUT_ARRAY_KEY})
_INT_FIELDS = frozenset(
    f.name for f in fields(StudentConfig) if f.type in ("int", int) and f.name != "backbone_args"
)

ProgressFn = Callable[[TrainEvent], None]


# ---------------------------------------------------------------------------------- data types
@dataclass(frozen=True)
class RoundRequest:
    """What to train: ``overrides`` are StudentConfig fields (plus ``input_array``); empty pool
    ids default as the module docstring says, ``seed`` None to ``round_seed(spec.seed, round)``."""

    experiment_id: str
    round: int
    overrides: Mapping[str, Any] = field(default_factory=dict)
    pool_id: str = ""
    teacher_pool_id: str = ""
    test_pool_id: str = ""
    teacher_test_pool_id: str = ""
    predict_pool: bool = False
    seed: int | None = None
    #: also store the round's distillation targets as ``<experiment>/round-<r>/teacher``
    #: (``activekd.ids.teacher_targets_pool_id``); needs a teacher pool
    write_teacher_targets: bool = False


@dataclass(frozen=True)
class Evaluation:
    """Test metrics of a student; teacher fields are None without teacher test probabilities,
    ``kd_accuracy`` is None for a CE-only student."""

    accuracy: float
    ce_accuracy: float
    kd_accuracy: float | None
    num_examples: int
    teacher_accuracy: float | None
    teacher_agreement: float | None
    test_pool_id: str
    seconds: float


@dataclass
class PreparedRound:
    """A validated round, ready to train: resolved config, pools and the labeled rows."""

    request: RoundRequest
    experiment: Experiment
    config: StudentConfig
    input_array: str
    pool_id: str
    teacher_pool_id: str
    test_pool_id: str
    teacher_test_pool_id: str
    x_pool: np.ndarray
    teacher_probs: np.ndarray | None
    labeled_rows: np.ndarray
    labels: np.ndarray
    labeled_ids: list[str]

    @property
    def num_labeled(self) -> int:
        return int(self.labeled_rows.size)


@dataclass
class RoundOutcome:
    """What a finished round produced."""

    checkpoint: CheckpointInfo
    config: StudentConfig
    num_labeled: int
    steps: int
    losses: dict[str, float]
    train_seconds: float
    evaluation: Evaluation | None = None
    student_pool: PoolMeta | None = None
    predict_seconds: float = 0.0


# ---------------------------------------------------------------------------------- helpers
def coerce_numbers(values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a config dict with integral floats turned into ints where StudentConfig wants an
    int (``google.protobuf.Struct`` carries every number as a double) and inside
    ``backbone_args`` (widths, sizes)."""

    def fix(v: Any) -> Any:
        if isinstance(v, float) and math.isfinite(v) and v.is_integer():
            return int(v)
        if isinstance(v, list):
            return [fix(x) for x in v]
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        return v

    out = dict(values)
    for name in _INT_FIELDS:
        if name in out:
            out[name] = fix(out[name]) if isinstance(out[name], float) else out[name]
    if isinstance(out.get("backbone_args"), dict):
        out["backbone_args"] = fix(out["backbone_args"])
    return out


def _check_keys(values: Mapping[str, Any], where: str, error: type[ActiveKDError]) -> None:
    known = {f.name for f in fields(StudentConfig)} | TRAINER_KEYS
    unknown = sorted(set(values) - known)
    if unknown:
        raise error(
            f"{where} has unknown keys {unknown}; valid keys: {sorted(known)}",
            field=unknown[0],
        )


def resolve_student_config(
    experiment: Experiment,
    round_: int,
    overrides: Mapping[str, Any],
    *,
    seed: int | None = None,
    teacher_classes: int | None = None,
) -> tuple[StudentConfig, str]:
    """The round's StudentConfig and input array name (see module docstring for precedence).

    Raises InvalidArgument for bad overrides or seed, FailedPrecondition for a bad spec.
    """
    spec = experiment.spec
    spec_config = coerce_numbers(spec.student_config or {})
    request_config = coerce_numbers(overrides or {})
    _check_keys(
        spec_config,
        f"experiment {shown(experiment.experiment_id)} student_config",
        FailedPrecondition,
    )
    _check_keys(request_config, "student_config overrides", InvalidArgument)
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_MODULUS:
            raise InvalidArgument(
                f"seed {shown(seed)} must be an integer in [0, 2**63)", field="seed"
            )
        if request_config.get("seed", seed) != seed:
            raise InvalidArgument(
                f"seed {seed} contradicts student_config seed {shown(request_config['seed'])}: "
                "give one of the two",
                field="seed",
            )
        request_config["seed"] = seed
    num_classes = spec.num_classes or teacher_classes
    base: dict[str, Any] = {"seed": round_seed(int(spec.seed), round_)}
    if num_classes:
        base["num_classes"] = int(num_classes)
    merged_spec = {**base, **spec_config}
    input_array = str(merged_spec.pop(INPUT_ARRAY_KEY, DEFAULT_INPUT_ARRAY))
    try:
        StudentConfig.from_dict(merged_spec)
    except InvalidArgument as exc:
        raise FailedPrecondition(
            f"experiment {shown(experiment.experiment_id)} student_config is invalid: {exc}",
            field=exc.field,
        ) from exc
    merged = {**merged_spec, **request_config}
    input_array = str(merged.pop(INPUT_ARRAY_KEY, input_array))
    if not input_array:
        raise InvalidArgument("input_array must not be empty", field=INPUT_ARRAY_KEY)
    if spec.num_classes and merged.get("num_classes") != spec.num_classes:
        raise InvalidArgument(
            f"student config: num_classes = {merged.get('num_classes')!r} contradicts the "
            f"experiment's {spec.num_classes} class names",
            field="num_classes",
        )
    return StudentConfig.from_dict(merged), input_array


def labels_for_round(
    experiments: ExperimentStore, experiment: Experiment, round_: int
) -> dict[str, int]:
    """Labels the student of ``round_`` trains on: every label except those of items selected in
    ``round_`` or later (ordered as first labeled)."""
    exp_id = experiment.experiment_id
    labels = experiments.labels(exp_id)
    later: set[str] = set()
    for rec in experiment.rounds:
        if rec.round >= round_:
            later.update(rec.selected_item_ids)
    order = experiments.labeled_ids(exp_id)
    seen = set(order)
    order += sorted(set(labels) - seen)
    return {i: labels[i] for i in order if i in labels and i not in later}


# ---------------------------------------------------------------------------------- trainer
class RoundTrainer:
    """Runs rounds, scores pools and evaluates students for experiments in Redis + a pool store.

    ``checkpoint_root`` holds ``<experiment>/round-<r>.ckpt``; ``device`` is ``auto``/``cpu``/
    ``cuda``; ``threads`` > 0 is the torch CPU thread count used when the config leaves it at 0.
    Thread-safe: the gRPC service calls it from worker threads.
    """

    def __init__(
        self,
        store: PoolStore,
        experiments: ExperimentStore,
        checkpoint_root: str | os.PathLike[str],
        *,
        device: str = "auto",
        threads: int = 0,
        check_path: Callable[[str, str], Path] | None = None,
    ) -> None:
        self.store = store
        #: confines host paths an experiment or request names (``backbone_args.weights_path``);
        #: the trainer service passes its data-root policy; None trusts the caller (library use)
        self.check_path = check_path
        self.experiments = experiments
        self.checkpoints = CheckpointRegistry(checkpoint_root)
        self.device = device
        self.threads = threads
        self._training: set[tuple[str, int]] = set()
        self._training_lock = threading.Lock()

    # ---- checkpoints -----------------------------------------------------------------------
    def checkpoint_info(self, experiment_id: str, round_: int) -> CheckpointInfo:
        """Info of the stored checkpoint; NotFound when the round has none."""
        return self.checkpoints.info(experiment_id, round_)

    def list_checkpoints(self, experiment_id: str) -> list[CheckpointInfo]:
        """Every stored checkpoint of an experiment, by round (NotFound for an unknown one)."""
        self.experiments.get(experiment_id)
        return self.checkpoints.list(experiment_id)

    @contextlib.contextmanager
    def open_checkpoint(
        self, experiment_id: str, round_: int
    ) -> Iterator[tuple[BinaryIO, CheckpointInfo]]:
        """:meth:`CheckpointRegistry.open` of a known experiment (NotFound otherwise)."""
        self.experiments.get(experiment_id)
        with self.checkpoints.open(experiment_id, round_) as opened:
            yield opened

    def _load(self, experiment_id: str, round_: int) -> tuple[Any, Any, CheckpointInfo]:
        self.experiments.get(experiment_id)
        path = self.checkpoints.path(experiment_id, round_)
        if not path.exists():
            raise FailedPrecondition(
                f"experiment {shown(experiment_id)} has no checkpoint for round {round_}: train the "
                "round first (TrainRound)",
                field="round",
            )
        model, checkpoint = load_student(path, self.device)
        return model, checkpoint, self.checkpoints.describe(experiment_id, round_, path)

    # ---- pools -----------------------------------------------------------------------------
    def _meta(self, pool_id: str, what: str) -> PoolMeta:
        try:
            return self.store.describe(pool_id)
        except NotFound:
            raise FailedPrecondition(
                f"{what} pool {shown(pool_id)} does not exist; upload or score it first",
                field=f"{what.replace(' ', '_')}_pool_id",
            ) from None

    def _array(self, meta: PoolMeta, name: str, what: str) -> np.ndarray:
        if name not in meta.arrays:
            raise FailedPrecondition(
                f"{what} pool {shown(meta.pool_id)} has no array {shown(name)}; it has "
                f"{sorted(meta.arrays) or 'none'}",
                field=f"{what.replace(' ', '_')}_pool_id",
            )
        return self.store.open_array(meta.pool_id, name)

    def _in_pool_order(
        self, meta: PoolMeta, array: np.ndarray, target_pool: str, what: str
    ) -> np.ndarray:
        """``array`` (rows in ``meta``'s pool order) in ``target_pool``'s item order."""
        if meta.pool_id == target_pool:
            return array
        target_ids = self.store.item_ids(target_pool)
        if np.array_equal(self.store.item_ids(meta.pool_id), target_ids):
            return array
        try:
            rows = self.store.rows_for(meta.pool_id, [str(i) for i in target_ids])
        except InvalidArgument as exc:
            raise FailedPrecondition(
                f"{what} pool {shown(meta.pool_id)} does not cover pool {shown(target_pool)}: {exc}",
                field=f"{what.replace(' ', '_')}_pool_id",
            ) from None
        return np.asarray(array[rows])

    def _aligned_probs(
        self, probs_meta: PoolMeta, target_pool: str, num_classes: int, what: str
    ) -> np.ndarray:
        """The ``probs`` of ``probs_meta`` in ``target_pool``'s item order, validated."""
        probs = self._array(probs_meta, TEACHER_ARRAY, what)
        if probs.ndim != 2 or probs.shape[1] != num_classes:
            raise FailedPrecondition(
                f"{what} pool {shown(probs_meta.pool_id)}: array {shown(TEACHER_ARRAY)} has shape "
                f"{list(probs.shape)}, the student has num_classes = {num_classes}",
                field=f"{what.replace(' ', '_')}_pool_id",
            )
        target_ids = self.store.item_ids(target_pool)
        probs = self._in_pool_order(probs_meta, probs, target_pool, what)
        try:
            check_probabilities(
                probs,
                f"{what} probs",
                rows=len(target_ids),
                classes=num_classes,
                classes_owner="the student",
            )
        except InvalidArgument as exc:
            raise FailedPrecondition(
                f"{what} pool {shown(probs_meta.pool_id)}: {exc}",
                field=f"{what.replace(' ', '_')}_pool_id",
            ) from None
        return probs

    # ---- a round ---------------------------------------------------------------------------
    def prepare(self, request: RoundRequest) -> PreparedRound:
        """Gathers and validates every input of a round (no training yet)."""
        if isinstance(request.round, bool) or int(request.round) < 0:
            raise InvalidArgument(f"round {shown(request.round)} must be >= 0", field="round")
        exp = self.experiments.get(request.experiment_id)
        round_ = int(request.round)
        if round_ > exp.current_round:
            raise FailedPrecondition(
                f"experiment {shown(exp.experiment_id)} is in round {exp.current_round}; "
                f"round {round_} has not begun",
                field="round",
            )
        spec = exp.spec
        pool_id = request.pool_id or spec.pool_id
        test_pool_id = request.test_pool_id or spec.test_pool_id
        record = next((rec for rec in exp.rounds if rec.round == round_), None)
        teacher_pool_id = (
            request.teacher_pool_id
            or (record.teacher_pool_id if record else "")
            or str(spec.teacher_config.get("pool_id") or "")
        )
        teacher_test_id = request.teacher_test_pool_id or str(
            spec.teacher_config.get("test_pool_id") or ""
        )

        pool_meta = self._meta(pool_id, "pool")
        kd_wanted = coerce_numbers({**spec.student_config, **request.overrides}).get("kd", True)
        teacher_meta = None
        if kd_wanted is not False:
            if not teacher_pool_id:
                raise FailedPrecondition(
                    f"no teacher pool for round {round_} of {shown(exp.experiment_id)}: pass "
                    "teacher_pool_id or set the experiment's teacher_config.pool_id (or train "
                    "with kd=false)",
                    field="teacher_pool_id",
                )
            teacher_meta = self._meta(teacher_pool_id, "teacher")
        teacher_classes = None
        if teacher_meta is not None and TEACHER_ARRAY in teacher_meta.arrays:
            shape = teacher_meta.arrays[TEACHER_ARRAY].shape
            teacher_classes = shape[1] if len(shape) == 2 else None
        cfg, input_array = resolve_student_config(
            exp, round_, request.overrides, seed=request.seed, teacher_classes=teacher_classes
        )
        if cfg.threads == 0 and self.threads > 0:
            cfg = cfg.replace(threads=self.threads)
        weights = cfg.backbone_args.get("weights_path")
        if weights and self.check_path is not None:
            checked = self.check_path(str(weights), "student_config.backbone_args.weights_path")
            cfg = cfg.replace(backbone_args={**cfg.backbone_args, "weights_path": str(checked)})

        labels = labels_for_round(self.experiments, exp, round_)
        if not labels:
            raise FailedPrecondition(
                f"experiment {shown(exp.experiment_id)} has no labels for round {round_} yet; submit "
                "labels first",
                field="labels",
            )
        bad = {i: v for i, v in labels.items() if not 0 <= v < cfg.num_classes}
        if bad:
            listed = ", ".join(f"{k}={v}" for k, v in list(bad.items())[:5])
            raise FailedPrecondition(
                f"experiment {shown(exp.experiment_id)}: {len(bad)} label(s) outside "
                f"[0, {cfg.num_classes}): {listed}",
                field="labels",
            )
        ids = list(labels)
        try:
            rows = self.store.rows_for(pool_id, ids)
        except InvalidArgument as exc:
            raise FailedPrecondition(
                f"labeled items of experiment {shown(exp.experiment_id)} are missing from the pool: "
                f"{exc}",
                field="pool_id",
            ) from None
        order = np.argsort(rows, kind="stable")
        rows = rows[order]
        y = np.asarray([labels[ids[i]] for i in order], dtype=np.int64)

        x_pool = self._array(pool_meta, input_array, "pool")
        kind = BACKBONES[cfg.backbone].input_kind
        try:
            validate_x(x_pool, kind, f"pool {shown(pool_id)} array {shown(input_array)}")
        except InvalidArgument as exc:
            raise FailedPrecondition(str(exc), field="pool_id") from None
        teacher = None
        if teacher_meta is not None:
            teacher = self._aligned_probs(teacher_meta, pool_id, cfg.num_classes, "teacher")
            if spec.teacher_config.get("adaptation", "none") == "clap":
                teacher = self._adapted_teacher(teacher_meta, pool_id, teacher, rows, y)

        if request.write_teacher_targets and teacher is None:
            raise FailedPrecondition(
                "write_teacher_targets needs the teacher's probabilities: give a teacher_pool_id "
                "(or create the experiment with teacher_config.pool_id)",
                field="teacher_pool_id",
            )
        if test_pool_id:
            test_meta = self._meta(test_pool_id, "test")
            self._array(test_meta, input_array, "test")
            self._array(test_meta, LABELS_ARRAY, "test")
            if teacher_test_id:
                self._meta(teacher_test_id, "teacher test")
        elif request.teacher_test_pool_id:
            raise InvalidArgument(
                "teacher_test_pool_id is set but there is no test pool", field="test_pool_id"
            )
        return PreparedRound(
            request=request,
            experiment=exp,
            config=cfg,
            input_array=input_array,
            pool_id=pool_id,
            teacher_pool_id=teacher_pool_id if teacher is not None else "",
            test_pool_id=test_pool_id,
            teacher_test_pool_id=teacher_test_id,
            x_pool=x_pool,
            teacher_probs=teacher,
            labeled_rows=rows,
            labels=y,
            labeled_ids=[ids[i] for i in order],
        )

    def _adapted_teacher(
        self,
        teacher_meta: PoolMeta,
        pool_id: str,
        probs: np.ndarray,
        rows: np.ndarray,
        labels: np.ndarray,
    ) -> np.ndarray:
        """``teacher_config.adaptation = "clap"``: the teacher's linear head refitted on this
        round's labels (:class:`activekd.teacher.adapt.TeacherAdapter`, from the zero-shot head
        stored beside the teacher pool, :mod:`activekd.teacher.head_pool`, else from a head fitted
        to the zero-shot probabilities), its probabilities of the pool as the KD targets."""
        from activekd.teacher.adapt import TeacherAdapter
        from activekd.teacher.head_pool import read_head

        if TEACHER_FEATURES_ARRAY not in teacher_meta.arrays:
            raise FailedPrecondition(
                f"teacher pool {shown(teacher_meta.pool_id)} has no {shown(TEACHER_FEATURES_ARRAY)} array, "
                "which teacher_config.adaptation='clap' adapts on: ScorePool keeps features when "
                "it runs the teacher (not when a probabilities-only cache answers: use force), or "
                "upload a features array with the probs; else set adaptation to 'none'",
                field="teacher_pool_id",
            )
        raw = self._array(teacher_meta, TEACHER_FEATURES_ARRAY, "teacher")
        feats = np.asarray(self._in_pool_order(teacher_meta, raw, pool_id, "teacher"), np.float32)
        if feats.ndim != 2 or not np.isfinite(feats).all():
            raise FailedPrecondition(
                f"teacher pool {shown(teacher_meta.pool_id)}: array {shown(TEACHER_FEATURES_ARRAY)} must "
                f"be a finite (N, D) matrix, got shape {list(feats.shape)}",
                field="teacher_pool_id",
            )
        # from the teacher's own zero-shot head where its pool names one (open_clip's text
        # weights, MiniLM's prototypes), else from a head fitted to its zero-shot probabilities
        head = read_head(
            self.store, teacher_meta, num_classes=probs.shape[1], feature_dim=feats.shape[1]
        )
        if head is not None:
            adapter = TeacherAdapter(head.prototypes, head.logit_scale)
        else:
            adapter = TeacherAdapter.from_zero_shot(feats, probs)
        log.info(
            "adapting the teacher",
            extra={"teacher_pool": teacher_meta.pool_id, "start": "head" if head else "fitted"},
        )
        adapter.fit(feats, rows, labels)
        return np.asarray(adapter.predict(feats), dtype=np.float32)

    @contextlib.contextmanager
    def _claim(self, experiment_id: str, round_: int) -> Iterator[None]:
        key = (experiment_id, round_)
        with self._training_lock:
            if key in self._training:
                raise Aborted(
                    f"round {round_} of experiment {shown(experiment_id)} is already training in this "
                    "trainer; wait for it to finish"
                )
            self._training.add(key)
        try:
            yield
        finally:
            with self._training_lock:
                self._training.discard(key)

    def run(
        self,
        prepared: PreparedRound,
        progress: ProgressFn | None = None,
        cancel: threading.Event | None = None,
    ) -> RoundOutcome:
        """Trains a prepared round, saves its checkpoint atomically, then scores the pool
        (``predict_pool``) and evaluates (when a test pool is set).

        ``progress`` gets a :class:`TrainEvent` every ``config.log_every`` steps and after the last;
        setting ``cancel`` stops training after the current step with ``Aborted`` (nothing saved).
        ``NonFiniteLossError`` keeps the old checkpoint.
        """
        req, exp = prepared.request, prepared.experiment
        exp_id, round_ = exp.experiment_id, int(req.round)
        path = self.checkpoints.path(exp_id, round_)

        every = prepared.config.log_every

        def on_event(ev: TrainEvent) -> None:  # called after every step (log_every=1 below)
            if cancel is not None and cancel.is_set():
                raise Aborted(
                    f"round {round_} of experiment {shown(exp_id)} was cancelled at step {ev.step}"
                )
            if progress is not None and (ev.step % every == 0 or ev.step == ev.total_steps):
                progress(ev)

        with self._claim(exp_id, round_):
            self.checkpoints.clean_temp_files(exp_id, round_)
            try:
                res = train_round(
                    prepared.config.replace(log_every=1),  # cancel checks after every step
                    None,
                    prepared.labels,
                    prepared.x_pool,
                    prepared.teacher_probs,
                    labeled_rows=prepared.labeled_rows,
                    progress=on_event,
                    device=self.device,
                )
            except NonFiniteLossError as exc:
                kept = "the previous checkpoint is kept" if path.exists() else "no checkpoint saved"
                raise NonFiniteLossError(
                    f"round {round_} of experiment {shown(exp_id)}: {exc}; {kept}", step=exc.step
                ) from exc
            config = res.config.replace(log_every=every)
            last = res.history[-1]
            losses = {"total": last.loss, "ce": last.ce, "kd": last.kd}
            meta = {
                "experiment_id": exp_id,
                "round": round_,
                "pool_id": prepared.pool_id,
                "input_array": prepared.input_array,
                "teacher_pool_id": prepared.teacher_pool_id,
                "num_labeled": prepared.num_labeled,
                "labels_sha256": _labels_digest(prepared.labeled_ids, prepared.labels),
                "train_seconds": res.elapsed_seconds,
                "losses": losses,
            }
            saved = save_checkpoint(path, res.model, config, meta)
            info = self.checkpoints.describe(exp_id, round_, saved)
        outcome = RoundOutcome(
            checkpoint=info,
            config=config,
            num_labeled=prepared.num_labeled,
            steps=len(res.history),
            losses=losses,
            train_seconds=res.elapsed_seconds,
        )
        if req.write_teacher_targets:
            self._write_teacher_targets(prepared, info)
        if req.predict_pool:
            t0 = time.perf_counter()
            outcome.student_pool = self._write_scores(
                res.model, config, prepared.x_pool, prepared.pool_id,
                student_pool_id(exp_id, round_), exp_id, round_, info,
            )  # fmt: skip
            outcome.predict_seconds = time.perf_counter() - t0
        if prepared.test_pool_id:
            outcome.evaluation = self._evaluate(
                res.model, config, prepared.input_array, prepared.test_pool_id,
                prepared.teacher_test_pool_id,
            )  # fmt: skip
        return outcome

    def train(
        self,
        request: RoundRequest,
        progress: ProgressFn | None = None,
        cancel: threading.Event | None = None,
    ) -> RoundOutcome:
        """:meth:`prepare` then :meth:`run`."""
        return self.run(self.prepare(request), progress, cancel)

    # ---- scoring and evaluation --------------------------------------------------------------
    def _write_scores(
        self,
        model: Any,
        cfg: StudentConfig,
        x: np.ndarray,
        pool_id: str,
        output_pool_id: str,
        exp_id: str,
        round_: int,
        info: CheckpointInfo,
    ) -> PoolMeta:
        scores = score_pool(model, x, cfg.score_batch_size, precision=cfg.precision,
                            threads=cfg.threads or None)  # fmt: skip
        ids = [str(i) for i in self.store.item_ids(pool_id)]
        return self.store.put(
            output_pool_id,
            ids,
            scores.arrays(),
            metadata={
                "kind": "student",
                "experiment_id": exp_id,
                "round": str(round_),
                "source_pool_id": pool_id,
                "checkpoint_sha256": info.sha256,
            },
            overwrite=True,
        )

    def _write_teacher_targets(self, prepared: PreparedRound, info: CheckpointInfo) -> PoolMeta:
        """The round's distillation targets as ``<experiment>/round-<r>/teacher``, in the pool's
        rows and item ids (a teacher pool may hold more items, in another order), for a strategy
        that selects on the teacher's probabilities: what the in-process loop passes it too."""
        exp_id, round_ = prepared.experiment.experiment_id, prepared.request.round
        assert prepared.teacher_probs is not None
        return self.store.put(
            teacher_targets_pool_id(exp_id, round_),
            [str(i) for i in self.store.item_ids(prepared.pool_id)],
            {"probs": np.asarray(prepared.teacher_probs, dtype=np.float32)},
            metadata={
                "kind": "teacher-targets",
                "experiment_id": exp_id,
                "round": str(round_),
                "source_pool_id": prepared.pool_id,
                "teacher_pool_id": prepared.teacher_pool_id,
                "adaptation": str(
                    prepared.experiment.spec.teacher_config.get("adaptation", "none")
                ),
                "checkpoint_sha256": info.sha256,
            },
            overwrite=True,
        )

    def predict_pool(
        self, experiment_id: str, round_: int, pool_id: str = "", output_pool_id: str = ""
    ) -> tuple[PoolMeta, float]:
        """Scores a pool (default: the one the round trained on) with the round's student into
        ``output_pool_id`` (default ``<experiment>/round-<r>/student``); returns its metadata and
        the compute seconds."""
        t0 = time.perf_counter()
        model, checkpoint, info = self._load(experiment_id, round_)
        exp = self.experiments.get(experiment_id)
        pool_id = pool_id or str(checkpoint.metadata.get("pool_id") or exp.spec.pool_id)
        input_array = str(checkpoint.metadata.get("input_array") or DEFAULT_INPUT_ARRAY)
        x = self._array(self._meta(pool_id, "pool"), input_array, "pool")
        try:
            validate_x(x, model.input_kind, f"pool {shown(pool_id)} array {shown(input_array)}",
                       model.input_dim)  # fmt: skip
        except InvalidArgument as exc:
            raise FailedPrecondition(str(exc), field="pool_id") from None
        out_id = output_pool_id or student_pool_id(experiment_id, round_)
        meta = self._write_scores(
            model, checkpoint.config, x, pool_id, out_id, experiment_id, round_, info
        )
        return meta, time.perf_counter() - t0

    def evaluate(
        self,
        experiment_id: str,
        round_: int,
        test_pool_id: str = "",
        teacher_test_pool_id: str = "",
    ) -> Evaluation:
        """Evaluates the round's student on a test pool (default: the spec's)."""
        model, checkpoint, _ = self._load(experiment_id, round_)
        exp = self.experiments.get(experiment_id)
        test_pool_id = test_pool_id or exp.spec.test_pool_id
        if not test_pool_id:
            raise FailedPrecondition(
                f"no test pool: pass test_pool_id or set the experiment {shown(experiment_id)} spec's "
                "test_pool_id",
                field="test_pool_id",
            )
        input_array = str(checkpoint.metadata.get("input_array") or DEFAULT_INPUT_ARRAY)
        teacher_test = teacher_test_pool_id or str(
            exp.spec.teacher_config.get("test_pool_id") or ""
        )
        return self._evaluate(model, checkpoint.config, input_array, test_pool_id, teacher_test)

    def _evaluate(
        self,
        model: Any,
        cfg: StudentConfig,
        input_array: str,
        test_pool_id: str,
        teacher_test_pool_id: str,
    ) -> Evaluation:
        t0 = time.perf_counter()
        meta = self._meta(test_pool_id, "test")
        x = self._array(meta, input_array, "test")
        y = np.asarray(self._array(meta, LABELS_ARRAY, "test"))
        try:
            validate_x(x, model.input_kind, f"test pool {shown(test_pool_id)} array {shown(input_array)}",
                       model.input_dim)  # fmt: skip
            y = validate_labels(
                y, x.shape[0], cfg.num_classes, f"test pool {shown(test_pool_id)} labels"
            )
        except InvalidArgument as exc:
            raise FailedPrecondition(str(exc), field="test_pool_id") from None
        teacher = None
        if teacher_test_pool_id:
            t_meta = self._meta(teacher_test_pool_id, "teacher test")
            teacher = self._aligned_probs(t_meta, test_pool_id, cfg.num_classes, "teacher test")
        ev = evaluate(model, x, y, teacher, batch_size=cfg.score_batch_size,
                      precision=cfg.precision, threads=cfg.threads or None)  # fmt: skip
        return Evaluation(
            accuracy=ev["accuracy"],
            ce_accuracy=ev["accuracy_ce"],
            kd_accuracy=ev["accuracy_kd"],
            num_examples=ev["n"],
            teacher_accuracy=ev.get("teacher_accuracy"),
            teacher_agreement=ev.get("teacher_agreement"),
            test_pool_id=test_pool_id,
            seconds=time.perf_counter() - t0,
        )


def _labels_digest(ids: list[str], labels: np.ndarray) -> str:
    digest = hashlib.sha256()
    for item_id, label in sorted(zip(ids, labels.tolist(), strict=True)):
        digest.update(f"{item_id}\t{label}\n".encode())
    return digest.hexdigest()[:16]


__all__ = [
    "DEFAULT_INPUT_ARRAY",
    "INPUT_ARRAY_KEY",
    "TRAINER_KEYS",
    "Evaluation",
    "PreparedRound",
    "RoundOutcome",
    "RoundRequest",
    "RoundTrainer",
    "coerce_numbers",
    "labels_for_round",
    "resolve_student_config",
    "student_pool_id",
]
