"""``activekd-annotation`` / ``python -m activekd.annotation``: serve the Label Studio ML backend.

Reads :class:`~activekd.annotation.config.AnnotationConfig` from the environment, checks the
project's labeling config against the experiment's classes (the process stops with the
differences named), registers the ML backend and webhook with Label Studio when
``--connect URL`` gives the URL Label Studio reaches this backend at, then serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import sys

from activekd.annotation.config import AnnotationConfig

log = logging.getLogger("activekd.annotation")


def build(cfg: AnnotationConfig) -> tuple[object, object]:
    """The app and its worker for ``cfg`` (connects to Redis, the store, Label Studio)."""
    from activekd.annotation.backend import SyncWorker, create_app
    from activekd.annotation.labelstudio import LabelStudioProject
    from activekd.annotation.ledger import AnnotationLedger
    from activekd.annotation.sync import AnnotationSync
    from activekd.client import ExperimentClient
    from activekd.server.stores import open_pool_store
    from activekd.state.redis_conn import connect

    client = connect(cfg.redis_url)
    sync = AnnotationSync(
        ExperimentClient(cfg.experiment_target, timeout=3600),
        open_pool_store(cfg, client),
        AnnotationLedger(client, cfg.experiment_id),
        LabelStudioProject(
            cfg.label_studio_url, cfg.label_studio_api_key, cfg.label_studio_project
        ),
        cfg.experiment_id,
        auto_advance=cfg.auto_advance,
    )
    _ = sync.classes  # fail fast on a labeling config that does not match the experiment
    worker = SyncWorker(sync, cfg.resync_seconds)
    return create_app(sync, cfg.secret, worker), worker


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="activekd-annotation", description=__doc__.split("\n")[0])
    ap.add_argument(
        "--connect",
        metavar="URL",
        default="",
        help="register this backend (ML backend + webhook) in the project, at URL",
    )
    args = ap.parse_args(argv)
    from activekd.server.logs import configure_logging

    cfg = AnnotationConfig.from_env().check()
    configure_logging("annotation", cfg.log_level)
    if cfg.opens_network:
        log.warning("annotation backend listens beyond this host", extra={"host": cfg.host})
    try:
        app, worker = build(cfg)
    except Exception as exc:
        log.error("annotation backend cannot start", extra={"error": str(exc)[:300]})
        print(f"activekd-annotation: {exc}", file=sys.stderr)
        return 2
    import uvicorn

    from activekd.server import metrics

    if cfg.metrics_port >= 0:
        metrics.start_metrics_server(cfg.metrics_port)
    worker.start()  # type: ignore[attr-defined]
    if args.connect:
        from activekd.annotation.labelstudio import LabelStudioProject

        project = LabelStudioProject(
            cfg.label_studio_url, cfg.label_studio_api_key, cfg.label_studio_project
        )
        import threading

        # Label Studio calls /health and /setup while registering: serve first, then connect
        threading.Timer(1.0, project.connect, args=(args.connect, cfg.secret)).start()
    server = uvicorn.Server(
        uvicorn.Config(app, host=cfg.host, port=cfg.port, log_config=None, access_log=False)  # type: ignore[arg-type]
    )
    server.run()
    worker.stop()  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
