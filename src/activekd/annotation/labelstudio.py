"""Everything the backend asks of Label Studio, through the official ``label-studio-sdk``.

``LABEL_STUDIO_URL`` and an API key (``LABEL_STUDIO_API_KEY``, or a file named by
``LABEL_STUDIO_API_KEY_FILE``) reach :class:`LabelStudioProject`. The SDK takes either kind of
key: a legacy token, or a personal access token (a JWT refresh token, which it exchanges for
access tokens itself).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from activekd.errors import FailedPrecondition, InvalidArgument

#: webhook actions the backend listens to
WEBHOOK_ACTIONS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED")


#: Data Manager columns the rank view hides (the picks' image, ids, round, rank, prediction
#: score and model version stay)
_NOISY_COLUMNS = tuple(
    f"tasks:{c}"
    for c in (
        "inner_id", "completed_at", "total_annotations", "cancelled_annotations",
        "total_predictions", "annotators", "annotations_results", "annotations_ids",
        "predictions_results", "file_upload", "storage_filename", "created_at", "updated_at",
        "updated_by", "avg_lead_time", "draft_exists", "data.experiment",
    )
)  # fmt: skip


def _plain(obj: Any) -> dict[str, Any]:
    """An SDK model (pydantic) or dict as a plain dict."""
    if isinstance(obj, dict):
        return obj
    # the SDK's models keep datetimes as objects: go through JSON
    out: dict[str, Any] = json.loads(json.dumps(obj.model_dump(warnings=False), default=_iso))
    return out


def _iso(value: Any) -> str:
    iso = getattr(value, "isoformat", None)
    return str(iso() if callable(iso) else value)


def value_or_file(env: Mapping[str, str], name: str, file_name: str) -> str:
    """``env[name]``, else the first line of the file ``env[file_name]`` ("" when neither is
    set); ``FailedPrecondition`` naming the variable when the file cannot be read."""
    value = env.get(name, "").strip()
    path = env.get(file_name, "").strip()
    if not value and path:
        try:
            value = Path(path).read_text().strip()
        except OSError:
            raise FailedPrecondition(f"{file_name} cannot be read") from None
    return value


def api_key_from_env(env: Mapping[str, str] | None = None) -> str:
    """The API key from ``LABEL_STUDIO_API_KEY`` or the file ``LABEL_STUDIO_API_KEY_FILE``."""
    key = value_or_file(
        os.environ if env is None else env, "LABEL_STUDIO_API_KEY", "LABEL_STUDIO_API_KEY_FILE"
    )
    if not key:
        raise FailedPrecondition("set LABEL_STUDIO_API_KEY or LABEL_STUDIO_API_KEY_FILE")
    return key


class LabelStudioProject:
    """One Label Studio project: its labeling config, tasks, annotations and hooks."""

    def __init__(self, url: str, api_key: str, project_id: int, timeout: float = 30.0) -> None:
        from label_studio_sdk import LabelStudio

        if not url.startswith(("http://", "https://")):
            raise InvalidArgument("LABEL_STUDIO_URL must be an http(s) URL")
        self.url, self.project_id = url.rstrip("/"), int(project_id)
        self.client = LabelStudio(base_url=self.url, api_key=api_key, timeout=timeout)

    @classmethod
    def create(
        cls, url: str, api_key: str, title: str, label_config: str, timeout: float = 30.0
    ) -> LabelStudioProject:
        """Create a project (what a user does once, e.g. with ``activekd-annotation init``)."""
        from label_studio_sdk import LabelStudio

        client = LabelStudio(base_url=url.rstrip("/"), api_key=api_key, timeout=timeout)
        project = client.projects.create(title=title, label_config=label_config)
        return cls(url, api_key, int(_plain(project)["id"]), timeout)

    def label_config(self) -> str:
        return str(_plain(self.client.projects.get(id=self.project_id))["label_config"])

    def tasks(self) -> Iterator[dict[str, Any]]:
        """Every task with its annotations (``fields=all``)."""
        task: Any
        for task in self.client.tasks.list(project=self.project_id, fields="all"):
            yield _plain(task)

    def import_tasks(self, tasks: Sequence[dict[str, Any]]) -> list[int]:
        """Import tasks (with predictions); returns their ids."""
        if not tasks:
            return []
        resp = _plain(
            self.client.projects.import_tasks(
                id=self.project_id,
                request=list(tasks),  # type: ignore[arg-type]
                return_task_ids=True,
            )
        )
        return [int(i) for i in resp.get("task_ids") or []]

    def annotations(self) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """(annotation, task) for every annotation in the project."""
        for task in self.tasks():
            for ann in task.get("annotations") or []:
                yield _plain(ann), task

    def connect(self, backend_url: str, secret: str, title: str = "activekd") -> None:
        """Register the ML backend (basic auth: user ``activekd``, password = the secret) and
        its webhook (``Authorization: Bearer <secret>``, our three actions) for this project;
        safe to repeat. Label Studio calls ``/health`` and ``/setup`` while registering, so the
        backend must be serving. Registering an ML backend also makes Label Studio create a
        ``<url>/webhook`` hook for all actions without headers: it is updated, not duplicated."""
        base = backend_url.rstrip("/")
        backends = [_plain(b) for b in self.client.ml.list(project=self.project_id)]
        mine = [b for b in backends if str(b.get("url", "")).rstrip("/") == base]
        for backend in mine:  # already registered: make it use the current secret
            self.client.ml.update(
                id=int(backend["id"]),
                auth_method="BASIC_AUTH",
                basic_auth_user="activekd",
                basic_auth_pass=secret,
            )
        if not mine:
            self.client.ml.create(
                project=self.project_id,
                url=base,
                title=title,
                auth_method="BASIC_AUTH",
                basic_auth_user="activekd",
                basic_auth_pass=secret,
                is_interactive=False,
            )
        hook_url = base + "/webhook"
        hooks = [_plain(h) for h in self.client.webhooks.list(project=str(self.project_id))]
        ours = [h for h in hooks if str(h.get("url", "")).rstrip("/") == hook_url]
        settings: dict[str, Any] = {
            "url": hook_url,
            "send_payload": True,
            "send_for_all_actions": False,
            "actions": list(WEBHOOK_ACTIONS),
            "headers": {"Authorization": f"Bearer {secret}"},
            "is_active": True,
        }
        if ours:
            for hook in ours:
                self.client.webhooks.update(id=int(hook["id"]), **settings)
        else:
            self.client.webhooks.create(project=self.project_id, **settings)

    def rank_view(self, title: str = "activekd: by round and pick rank") -> int:
        """A Data Manager tab ordering tasks by ``data.rank`` (numeric), for annotators; its id."""
        data = {
            "title": title,
            "ordering": ["tasks:data.rank"],
            "columnsDisplayType": {"tasks:data.rank": "Number", "tasks:data.round": "Number"},
            "hiddenColumns": {"explore": list(_NOISY_COLUMNS), "labeling": list(_NOISY_COLUMNS)},
        }
        view = _plain(self.client.views.create(project=self.project_id, data=data))  # type: ignore[arg-type]
        return int(view["id"])


__all__ = ["WEBHOOK_ACTIONS", "LabelStudioProject", "api_key_from_env"]
