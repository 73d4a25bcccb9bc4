"""SelectBatch with features from another pool (joined by item id) and strategy parameters, over
the real selection service (subprocess, real Redis, gRPC on loopback)."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from activekd.client import SelectionClient
from activekd.selection import select_batch
from tests.procs import ServiceProcess


@pytest.fixture
def client(selection_service: ServiceProcess) -> Iterator[SelectionClient]:
    with SelectionClient(selection_service.target, timeout=60) as c:
        c.wait_ready()
        yield c


def test_select_batch_with_features_pool_and_strategy_params(client: SelectionClient) -> None:
    rng = np.random.default_rng(0)
    n, c, d = 300, 4, 6
    feats = rng.normal(size=(n, d)).astype(np.float32)
    logits = feats[:, :c] * 2.0
    probs = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
    ids = [f"img-{i:04d}" for i in range(n)]
    client.upload_pool("cov/probs", item_ids=ids, arrays={"probs": probs}, overwrite=True)
    # the features pool holds the same items in another order, plus items of its own
    order = rng.permutation(n)
    extra = rng.normal(size=(20, d)).astype(np.float32)
    client.upload_pool(
        "cov/feats",
        item_ids=[ids[i] for i in order] + [f"other-{i}" for i in range(20)],
        arrays={"emb": np.concatenate([feats[order], extra])},
        overwrite=True,
    )
    labeled = [ids[5], ids[77], ids[201]]
    params = {"radius": 0.45, "max_neighbors": 64.0}
    got = client.select_batch(
        "probcover",
        8,
        pool_id="cov/probs",
        features_pool_id="cov/feats",
        features_array="emb",
        labeled=labeled,
        strategy_params=params,
        seed=3,
    )
    lib = select_batch(
        "probcover", 8, probs=probs, features=feats, labeled=[5, 77, 201], params=params, seed=3
    )
    assert got.rows.tolist() == lib.indices.tolist()
    assert got.item_ids == [ids[i] for i in lib.indices]
    assert got.stats["radius"] == pytest.approx(0.45) and got.strategy == "probcover"
    np.testing.assert_allclose(got.scores, lib.scores)

    # a hybrid on the same join, with its default parameters
    hyb = client.select_batch(
        "typiclust_pcoreset", 5, pool_id="cov/probs", features_pool_id="cov/feats",
        features_array="emb", labeled=labeled, seed=1,
    )  # fmt: skip
    want = select_batch("typiclust", 5, features=feats, labeled=[5, 77, 201], seed=1)
    assert hyb.rows.tolist() == want.indices.tolist()

    # an unknown parameter names the allowed ones
    with pytest.raises(grpc.RpcError) as exc:
        client.select_batch(
            "probcover", 3, pool_id="cov/probs", features_pool_id="cov/feats",
            features_array="emb", strategy_params={"radius_": 0.3},
        )  # fmt: skip
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert "alpha (default 0.95)" in exc.value.details()  # type: ignore[attr-defined]

    # features pool lacking items of the probabilities' pool: how many are missing
    client.upload_pool(
        "cov/partial", item_ids=ids[3:], arrays={"features": feats[3:]}, overwrite=True
    )
    with pytest.raises(grpc.RpcError) as exc:
        client.select_batch("typiclust", 3, pool_id="cov/probs", features_pool_id="cov/partial")
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert "3 of the 300 items" in exc.value.details()  # type: ignore[attr-defined]

    infos = {s.name: s for s in client.list_strategies()}
    assert infos["typiclust"].params == {"k_nn": 20, "max_clusters": 500, "min_cluster_size": 5}
    assert infos["probcover"].needs_features and not infos["probcover"].needs_probs
    assert infos["pcoreset"].params == {}
    assert infos["typiclust"].teacher_features and not infos["pcoreset"].teacher_features
    # which probabilities each selects on, over the wire (the registry's probs_source)
    assert {n: i.probs_source for n, i in infos.items() if i.probs_source != "combined"} == {
        "pcoreset_teacher": "teacher",
        "pcoreset_ce": "ce",
    }
