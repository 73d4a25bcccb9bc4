"""Annotators in the loop against a real Label Studio server (its own venv) and the real services.

Label Studio 1.23 runs from ``scripts/label_studio_venv.sh``'s venv on loopback with a fresh
SQLite dir; its API key is a personal access token obtained the way a user does (login, then
``POST /api/token/``; tests/annotation/label_studio_server.py). The backend runs as a real
``activekd-annotation`` process; annotators are played through ``label-studio-sdk``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from activekd.annotation.classes import labeling_config
from activekd.annotation.labelstudio import LabelStudioProject
from activekd.annotation.ledger import AnnotationLedger
from activekd.client import ExperimentClient, SelectionClient
from activekd.data.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist
from activekd.defaults import DEFAULT_STRATEGY
from activekd.orchestration.local_services import LocalServices
from activekd.state.experiments import ExperimentStore, RoundState
from activekd.state.redis_conn import connect
from activekd.v1 import experiment_pb2
from tests.annotation.label_studio_server import AnnotationBackend as Backend
from tests.annotation.label_studio_server import LabelStudioServer, ensure_venv

pytestmark = pytest.mark.slow
SECRET = "e2e-shared-secret-0123456789"
EXP = "ls-e2e"
ENV = {
    "ACTIVEKD_TEACHER_BACKEND": "label-map",
    "ACTIVEKD_TEACHER_IMAGE_SIZE": "64",
    "ACTIVEKD_THREADS": "1",
    "OMP_NUM_THREADS": "1",
}
N_POOL = 160


#: extra state a failed wait reports (set by the test once the stack exists)
DIAGNOSE: list[Callable[[], str]] = []


def wait_for(what: str, fn: Callable[[], Any], timeout: float = 120.0, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(every)
    extra = "; ".join(d() for d in DIAGNOSE)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r}); {extra}")


@pytest.fixture(scope="module")
def label_studio() -> Iterator[LabelStudioServer]:
    venv = ensure_venv()  # builds the venv when missing: never a silent skip
    with LabelStudioServer(venv) as server:
        yield server


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServices]:
    s = LocalServices(tmp_path_factory.mktemp("ls-stack"), env=ENV).start()
    x, y = load_fashion_mnist("train")
    xt, yt = load_fashion_mnist("test")
    with SelectionClient(s.target("selection")) as sel:
        sel.upload_pool("ls/pool", item_ids=[f"p{i}" for i in range(N_POOL)],
                        arrays={"images": x[:N_POOL], "labels": y[:N_POOL]})  # fmt: skip
        sel.upload_pool("ls/test", item_ids=[f"t{i}" for i in range(80)],
                        arrays={"images": xt[:80], "labels": yt[:80]})  # fmt: skip
    try:
        yield s
    finally:
        s.stop()


def _spec() -> experiment_pb2.ExperimentSpec:
    spec = experiment_pb2.ExperimentSpec(
        pool_id="ls/pool",
        test_pool_id="ls/test",
        dataset="fmnist-ls",
        class_names=list(FASHION_MNIST_CLASSES),
        strategy=DEFAULT_STRATEGY,
        initial_per_class=1,
        budget_per_round=5,
        num_rounds=2,
        seed=11,
    )
    spec.student_config.update({"steps": 8, "batch_size_labeled": 16, "batch_size_unlabeled": 32})
    return spec


def _choice(label: int) -> list[dict[str, Any]]:
    return [{"from_name": "label", "to_name": "image", "type": "choices",
             "value": {"choices": [FASHION_MNIST_CLASSES[label]]}}]  # fmt: skip


def _round_tasks(project: LabelStudioProject, round_: int) -> list[dict[str, Any]]:
    tasks = [t for t in project.tasks() if t["data"].get("round") == round_]
    return sorted(tasks, key=lambda t: t["data"]["rank"])


def test_annotators_drive_the_experiment_through_label_studio(
    label_studio: LabelStudioServer, stack: LocalServices, tmp_path: Path
) -> None:
    from label_studio_sdk import LabelStudio

    truth = {f"p{i}": int(v) for i, v in enumerate(load_fashion_mnist("train")[1][:N_POOL])}
    project = LabelStudioProject.create(
        label_studio.url,
        label_studio.api_key,
        "activekd e2e",
        labeling_config(FASHION_MNIST_CLASSES),
    )
    annotators = LabelStudio(base_url=label_studio.url, api_key=label_studio.api_key)
    assert stack.redis is not None
    store = ExperimentStore(connect(stack.redis.url))
    ledger = AnnotationLedger(connect(stack.redis.url), EXP)

    def diagnose() -> str:
        recs = sorted((r.annotation_id, r.item_id, r.label, r.deleted) for r in ledger.records())
        ls_anns = sorted((a["id"], t["data"]["item_id"]) for a, t in project.annotations())
        return (
            f"ledger={recs} applied={ledger.applied()} rejected={ledger.rejected()} "
            f"pending={store.pending_ids(EXP)} label_studio={ls_anns}"
        )

    DIAGNOSE[:] = [diagnose]
    with ExperimentClient(stack.target("experiment"), timeout=600) as client:
        client.create(_spec(), experiment_id=EXP)
        backend = Backend(
            stack, label_studio, project.project_id, tmp_path / "backend.log", EXP, SECRET
        )
        backend.start(connect=True)
        try:
            # round 0's picks appear as tasks, in pick order, with ranked predictions
            tasks0 = wait_for("round 0 tasks", lambda: len(_round_tasks(project, 0)) == 5 and
                              _round_tasks(project, 0))  # fmt: skip
            exp = client.get(EXP)
            assert exp.state is RoundState.AWAITING_LABELS
            picks0 = list(exp.rounds[0].selected_item_ids)
            assert [t["data"]["item_id"] for t in tasks0] == picks0
            preds = [t["predictions"][0] for t in tasks0]
            assert {p["model_version"] for p in preds} == {f"{EXP}/round-0"}
            assert [p["score"] for p in preds] == sorted((p["score"] for p in preds), reverse=True)
            # Label Studio registered us: ML backend connected, webhook with our header
            backends = list(annotators.ml.list(project=project.project_id))
            assert len(backends) == 1 and backends[0].state == "CO"
            hooks = [h for h in annotators.webhooks.list(project=str(project.project_id))]
            assert len(hooks) == 1 and not hooks[0].send_for_all_actions
            # /predict over HTTP: one result per task, score = rank, secret required
            code, body = backend.post("/predict", {"tasks": tasks0})
            assert code == 200 and len(body["results"]) == 5
            assert [r["score"] for r in body["results"]] == [1.0, 0.8, 0.6, 0.4, 0.2]
            assert backend.post("/predict", {"tasks": tasks0}, auth="Bearer wrong")[0] == 401
            assert backend.post("/webhook", {"action": "ANNOTATION_CREATED"}, auth="")[0] == 401

            # annotators label round 0 in rank order; the last one first gets a wrong class,
            # corrected while the round is open (applies at once)
            ann_ids: dict[str, int] = {}
            for t in tasks0[:-1]:
                a = annotators.annotations.create(
                    id=t["id"], result=_choice(truth[t["data"]["item_id"]])
                )
                ann_ids[t["data"]["item_id"]] = a.id
            last = tasks0[-1]["data"]["item_id"]
            wrong = (truth[last] + 1) % 10
            wait_for("4 labels stored", lambda: store.get(EXP).pending_labels == 1)
            a = annotators.annotations.create(id=tasks0[-1]["id"], result=_choice(wrong))
            ann_ids[last] = a.id
            # the round completes: the worker advances (trains, selects) and imports round 1
            tasks1 = wait_for("round 1 tasks", lambda: len(_round_tasks(project, 1)) == 5 and
                              _round_tasks(project, 1))  # fmt: skip
            exp = client.get(EXP)
            assert exp.current_round == 1 and exp.state is RoundState.AWAITING_LABELS
            assert store.labels(EXP)[last] == wrong
            assert [t["data"]["item_id"] for t in tasks1] == list(exp.rounds[1].selected_item_ids)
            assert {t["predictions"][0]["model_version"] for t in tasks1} == {f"{EXP}/round-1"}

            # a round-0 label changed now (round 1 open): applies at once
            annotators.annotations.update(id=ann_ids[last], result=_choice(truth[last]))
            wait_for("the correction", lambda: store.labels(EXP)[last] == truth[last])
            # two of round 1 labeled, then one deleted: its pick waits for a label again
            for t in tasks1[:2]:
                item = t["data"]["item_id"]
                ann_ids[item] = annotators.annotations.create(
                    id=t["id"], result=_choice(truth[item])
                ).id
            wait_for("2 of round 1", lambda: store.get(EXP).pending_labels == 3)
            gone = tasks1[0]["data"]["item_id"]
            annotators.annotations.delete(id=ann_ids[gone])
            wait_for("the withdrawal", lambda: store.get(EXP).pending_labels == 4)
            assert gone not in store.labels(EXP)

            # the backend dies mid-round; annotations made meanwhile reach nobody (webhook fails)
            backend.kill()
            for t in [tasks1[0], tasks1[2]]:
                item = t["data"]["item_id"]
                annotators.annotations.create(id=t["id"], result=_choice(truth[item]))
            time.sleep(1)
            assert store.get(EXP).pending_labels == 4  # nothing arrived
            backend = Backend(
                stack,
                label_studio,
                project.project_id,
                tmp_path / "backend2.log",
                EXP,
                SECRET,
                port=backend.port,  # where Label Studio knows it
            )
            backend.start(connect=True)  # connecting again updates, never duplicates
            wait_for("the resync after restart", lambda: store.get(EXP).pending_labels == 2)
            assert ledger.rejected() == {}
            # the rest of round 1, then the experiment trains its last round and finishes
            for t in tasks1[3:]:
                item = t["data"]["item_id"]
                annotators.annotations.create(id=t["id"], result=_choice(truth[item]))
            final = wait_for(
                "FINISHED", lambda: (e := client.get(EXP)).state is RoundState.FINISHED and e
            )
        finally:
            backend.stop()
    labels = store.labels(EXP)
    order = store.labeled_ids(EXP)
    assert final.labeled_count == 10 + 5 + 5 == len(labels) == len(order) == len(set(order))
    for item in [*picks0, *(t["data"]["item_id"] for t in tasks1)]:
        assert labels[item] == truth[item], item  # every annotator label, corrections applied
    assert len(list(project.tasks())) == 10  # no task imported twice (restart included)
    assert len(list(annotators.ml.list(project=project.project_id))) == 1
    assert len(list(annotators.webhooks.list(project=str(project.project_id)))) == 1


def test_data_manager_in_chromium_lists_the_picks_in_rank_order(
    label_studio: LabelStudioServer, tmp_path: Path
) -> None:
    """Headless Debian chromium (Playwright, executable_path): log in as the annotator, open the
    project's Data Manager tab sorted by our rank, see the picks in pick order; a PNG is written
    to tmp_path (and to $ACTIVEKD_SCREENSHOT_DIR when set, e.g. docs/)."""
    from playwright.sync_api import sync_playwright

    from activekd.annotation.classes import ClassMap
    from activekd.annotation.tasks import round_tasks

    x, _ = load_fashion_mnist("test")
    classes = list(FASHION_MNIST_CLASSES)
    project = LabelStudioProject.create(
        label_studio.url, label_studio.api_key, "activekd: round 0 picks", labeling_config(classes)
    )
    picks = ["p17", "p3", "p42", "p8", "p25", "p11"]  # the order a strategy chose them
    cm = ClassMap.from_config(project.label_config(), classes)
    images = {p: x[int(p[1:])] for p in picks}
    predicted = {p: i % 10 for i, p in enumerate(picks)}
    shuffled = round_tasks("demo", 0, picks, images, predicted, cm)
    project.import_tasks(shuffled[::-1])  # imported out of order: the view must sort them
    view = project.rank_view()
    chromium = Path(os.environ.get("ACTIVEKD_CHROMIUM", "/usr/bin/chromium"))
    assert chromium.is_file(), "Debian chromium is needed (make setup installs it)"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 800})
            page.goto(label_studio.url + "/user/login/")
            page.fill("#email", label_studio.username)
            page.fill("#password", label_studio.password)
            page.click("button.login-button")
            page.wait_for_url(lambda url: "/user/login" not in url, timeout=60_000)
            page.goto(f"{label_studio.url}/projects/{project.project_id}/data?tab={view}")
            page.wait_for_selector(f"text={picks[-1]}", timeout=90_000)
            page.wait_for_timeout(1500)  # thumbnails
            text = page.inner_text("body")
            shot = tmp_path / "label-studio-data-manager.png"
            page.screenshot(path=str(shot))
        finally:
            browser.close()
    positions = [text.find(p + "\n") if text.find(p + "\n") >= 0 else text.find(p) for p in picks]
    assert all(pos >= 0 for pos in positions), text[:2000]
    assert positions == sorted(positions), f"not in rank order: {positions}"
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("ACTIVEKD_SCREENSHOT_DIR"):
        out = Path(os.environ["ACTIVEKD_SCREENSHOT_DIR"]) / shot.name
        out.write_bytes(shot.read_bytes())
