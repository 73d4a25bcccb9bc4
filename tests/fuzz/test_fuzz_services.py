"""Property-based fuzzing of every RPC of the four running services (issue #13, "Bad input").

Requests come from the proto descriptors (tests/fuzz/strategies.py), so a new RPC or field is
fuzzed without an edit. Each RPC gets ``EXAMPLES`` well-typed hostile requests and ``RAW_EXAMPLES``
raw random bodies over real gRPC with the admin token, against one LocalServices stack
(tests/fuzz/conftest.py). For every call, asserted:

- no process (the four services, Redis) exits;
- the status is never INTERNAL or UNKNOWN;
- the answer arrives within its deadline (5 s; 30 s for ScorePool/TrainRound/AdvanceRound/
  PredictPool; WatchExperiment may run to its 2 s deadline, a watch never ends by itself);
- an undecodable body is INVALID_ARGUMENT;
- a rejected request leaves every Redis key (DUMP) and every stored file (sha256) unchanged.

Accepted requests are counted (printed at the end), not compared. Seeded (``derandomize``) and
bounded: about 2,600 calls in about a minute. ``bench/fuzz.py --examples N`` runs longer.
"""

from __future__ import annotations

import math

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.conftest import FuzzStack
from tests.fuzz.strategies import RpcCase, raw_bodies, rpc_cases

pytestmark = pytest.mark.slow

EXAMPLES = 80
RAW_EXAMPLES = 25
CASES = rpc_cases()
SERVICES = sorted({c.service for c in CASES})


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        print_blob=False,
        suppress_health_check=list(HealthCheck),
    )


def run_case(stack: FuzzStack, case: RpcCase, examples: int, raw_examples: int) -> None:
    """Fuzz ``case`` with typed requests then raw bodies; the first finding fails (shrunk)."""

    @fuzz_settings(examples)
    @given(request=case.requests())
    def typed(request: object) -> None:
        finding = stack.check(case, request)
        assert finding is None, finding

    raw_strategy = (
        st.lists(raw_bodies(), min_size=1, max_size=3) if case.client_streaming else raw_bodies()
    )

    @fuzz_settings(raw_examples)
    @given(body=raw_strategy)
    def raw(body: object) -> None:
        finding = stack.check(case, body, raw=True)
        assert finding is None, finding

    typed()
    raw()


def test_every_service_method_is_fuzzed() -> None:
    """The cases come from the descriptors: all four services, every method, each RPC kind."""
    assert SERVICES == [
        "activekd.v1.ExperimentService",
        "activekd.v1.SelectionService",
        "activekd.v1.TeacherService",
        "activekd.v1.TrainerService",
    ]
    assert len(CASES) >= 24
    assert {c.kind for c in CASES} == {
        "unary_unary",
        "unary_stream",
        "stream_unary",
        "stream_stream",
    }


@pytest.mark.parametrize("case", CASES, ids=str)
def test_fuzz_rpc(fuzz_stack: FuzzStack, case: RpcCase) -> None:
    before = fuzz_stack.stats.calls[case.method]
    run_case(fuzz_stack, case, EXAMPLES, RAW_EXAMPLES)
    assert fuzz_stack.stats.calls[case.method] > before  # the stack really was called
    assert fuzz_stack.dead() == []


@pytest.mark.parametrize("service", SERVICES)
def test_tokenless_call_is_unauthenticated(fuzz_stack: FuzzStack, service: str) -> None:
    """Without a token every method of ``service`` is UNAUTHENTICATED (the body is never read:
    an undecodable one too) and changes nothing."""
    for case in (c for c in CASES if c.service == service):
        before = fuzz_stack.snapshot()
        body = case.request_class()
        outcome = fuzz_stack.call(case, [body] if case.client_streaming else body, token=False)
        assert outcome.code == grpc.StatusCode.UNAUTHENTICATED, (case.path, outcome)
        raw = [b"\xff"] if case.client_streaming else b"\xff"
        outcome = fuzz_stack.call(case, raw, raw=True, token=False)
        assert outcome.code == grpc.StatusCode.UNAUTHENTICATED, (case.path, outcome)
        assert fuzz_stack.diff(before, fuzz_stack.snapshot()) == []


@pytest.mark.parametrize("shape", [[2**62, 2**62, 0], [64, 2**53 + 1, 1000, 0], [2**62, 2**62]])
def test_huge_tensor_shape_is_invalid_argument(fuzz_stack: FuzzStack, shape: list[int]) -> None:
    """Found by this fuzzer (bench/fuzz.py, Predict): a shape whose int64 element count wraps
    passed the byte-count check and failed in numpy's reshape, answered INTERNAL."""
    from activekd.v1 import common_pb2, teacher_pb2

    case = next(c for c in CASES if c.method == "Predict")
    tensor = common_pb2.Tensor(dtype=common_pb2.DATA_TYPE_FLOAT16, shape=shape)
    request = teacher_pb2.PredictRequest(images=[teacher_pb2.Image(item_id="a", pixels=tensor)])
    finding = fuzz_stack.check(case, request)
    assert finding is None, finding
    # Predict answers per image: the call is OK and the bad image carries INVALID_ARGUMENT
    from activekd.v1 import teacher_pb2_grpc

    stub = teacher_pb2_grpc.TeacherServiceStub(fuzz_stack.channel(case.service))
    reply = stub.Predict(request, timeout=10, metadata=fuzz_stack.metadata)
    error = reply.predictions[0].error
    assert error.code == "INVALID_ARGUMENT", error
    assert "too large" in error.message or "bytes but 0 were sent" in error.message, error


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_struct_number_is_invalid_argument(fuzz_stack: FuzzStack, value: float) -> None:
    """Found by this fuzzer (TrainRound): a NaN or inf number in a google.protobuf.Struct made
    json_format raise ValueError in struct_to_dict, answered INTERNAL."""
    from activekd.v1 import trainer_pb2

    case = next(c for c in CASES if c.method == "TrainRound")
    request = trainer_pb2.TrainRoundRequest(experiment_id="fz-x")
    request.student_config.fields["steps"].number_value = value
    finding = fuzz_stack.check(case, request)
    assert finding is None, finding
    assert fuzz_stack.call(case, request).code == grpc.StatusCode.INVALID_ARGUMENT


def test_zz_report(fuzz_stack: FuzzStack) -> None:
    """Prints the counts (run with -s to see them) and checks the run was big enough."""
    summary = fuzz_stack.stats.summary()
    print("\nfuzz summary:", summary)
    assert fuzz_stack.dead() == []
    assert summary["calls"] >= 2000
    assert summary["raw_invalid_argument"] > 0
    assert "INTERNAL" not in summary["codes"] and "UNKNOWN" not in summary["codes"]
