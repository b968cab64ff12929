"""QwenRetryPolicy's decision for each error class, through exception chains, with the server's delays
(odd ones too), its options, and its trip through Airflow's DAG serialisation and task runner."""

from __future__ import annotations

import builtins
import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from importlib import import_module

import httpx
import pytest
from airflow.sdk.definitions.retry_policy import RetryAction, RetryDecision

from airflow_provider_qwen.client import errors
from airflow_provider_qwen.client.request import build_request
from airflow_provider_qwen.client.retry import server_delay
from airflow_provider_qwen.retry_policy import DEFAULT_MAX_RETRY_DELAY, QwenRetryPolicy

POLICY = QwenRetryPolicy()
SECRET = "sk-live-SECRET-123456"
FAIL, RETRY, DEFAULT = RetryAction.FAIL, RetryAction.RETRY, RetryAction.DEFAULT

# Every module that defines a QwenError subclass: the table below must name each class.
ERROR_MODULES = (
    "airflow_provider_qwen.client.errors",
    "airflow_provider_qwen.agent.errors",
    "airflow_provider_qwen.batch.runner",
    "airflow_provider_qwen.batch.items",
    "airflow_provider_qwen.cost.budget",
    "airflow_provider_qwen.operators.spend",
    "airflow_provider_qwen.operators.batch",
    "airflow_provider_qwen.operators.batch_checks",
    "airflow_provider_qwen.decorators.base",
)
# class name -> (status it comes with, decision); a status error's decision is its status's
DECISIONS = {
    "QwenError": (None, DEFAULT),  # a refusal, a truncation with fail_on_truncation
    "InvalidRequestError": (None, FAIL),
    "ReturnedValueError": (None, FAIL),
    "BatchArgumentError": (None, FAIL),  # an AirflowFailException: Airflow never asks the policy
    "BudgetExceededError": (None, FAIL),
    "UnpricedModelError": (None, FAIL),
    "BudgetRefusedError": (None, FAIL),  # an AirflowFailException too
    "APIStatusError": (418, FAIL),
    "BadRequestError": (400, FAIL),
    "AuthenticationError": (401, FAIL),
    "InsufficientCreditsError": (403, FAIL),
    "NotFoundError": (404, FAIL),
    "ConflictError": (409, RETRY),
    "RateLimitError": (429, RETRY),
    "ServerError": (503, RETRY),
    "GenerationTimeoutError": (504, RETRY),
    "APITimeoutError": (None, RETRY),
    "APIConnectionError": (None, RETRY),
    "InvalidResponseError": (200, RETRY),
    "StreamError": (None, RETRY),
    "StructuredOutputError": (None, DEFAULT),
    "ToolArgumentsError": (None, DEFAULT),
    "AgentError": (None, DEFAULT),
    "AgentMaxTurnsError": (None, DEFAULT),
    "AgentLoopDetectedError": (None, DEFAULT),
    "AgentToolErrorsError": (None, DEFAULT),
    "JournalMismatchError": (None, DEFAULT),
    "BatchFailedError": (None, DEFAULT),  # its cause decides, when it has one
    "BatchStoppedError": (None, DEFAULT),
    "BatchStoppedBeforeSendError": (None, DEFAULT),
}


def decide(exception: BaseException, policy: QwenRetryPolicy = POLICY) -> RetryDecision:
    return policy.evaluate(exception, try_number=1, max_tries=3)


def status_error(
    status: int, retry_after: float | None = None, body: bytes = b'{"error": {"message": "nope"}}'
) -> errors.APIStatusError:
    return errors.error_for_status(status, body, retry_after=retry_after, client_request_id="qwen-1")


def all_error_classes() -> dict[str, type[errors.QwenError]]:
    for module in ERROR_MODULES:
        import_module(module)

    def walk(cls: type[errors.QwenError]) -> list[type[errors.QwenError]]:
        return [cls, *(c for sub in cls.__subclasses__() for c in walk(sub))]

    return {c.__name__: c for c in walk(errors.QwenError) if c.__module__.startswith("airflow_provider_qwen")}


def test_every_error_class_of_the_provider_has_a_decided_outcome():
    classes = all_error_classes()
    assert set(classes) == set(DECISIONS), "a new QwenError class: decide what the policy does with it"
    for name, cls in classes.items():
        status, expected = DECISIONS[name]
        error = cls("what went wrong", status_code=status, client_request_id="qwen-1")
        decision = decide(error)
        assert decision.action is expected, f"{name}: {decision}"
        if expected is not DEFAULT:
            assert decision.reason.startswith(name), decision.reason
            assert "what went wrong" not in decision.reason


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 413, 422, 451, 499])
def test_client_errors_fail_at_once(status):
    decision = decide(status_error(status))
    assert decision.action is FAIL
    assert f"status={status}" in decision.reason


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_fails_at_once_naming_the_host(status):
    decision = decide(status_error(status, retry_after=5))
    assert decision.action is FAIL
    assert "host" in decision.reason


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504, 529, 599])
def test_transient_statuses_retry_after_the_tasks_delay(status):
    decision = decide(status_error(status))
    assert decision.action is RETRY
    assert decision.retry_delay is None


def test_a_403_that_is_not_about_credits_still_fails_and_does_not_claim_credits_alone():
    body = b'{"message": "This key may not use alibaba/qwen3.8-max", "statusCode": 403}'
    decision = decide(status_error(403, body=body))
    assert decision.action is FAIL
    assert "or the key may not" in decision.reason
    html = decide(status_error(403, body=b"<html><body>Forbidden by WAF</body></html>"))
    assert html.action is FAIL


@pytest.mark.parametrize(
    "body",
    [
        b'{"error": {"message": "You exceeded your quota", "type": "insufficient_quota"}}',
        b'{"error": {"message": "quota", "code": "INSUFFICIENT_QUOTA"}}',
    ],
)
def test_a_429_that_says_the_quota_is_spent_fails_at_once(body):
    decision = decide(status_error(429, retry_after=1, body=body))
    assert decision.action is FAIL
    assert "quota" in decision.reason


def test_a_plain_429_with_an_odd_body_still_retries():
    for body in (b'{"error": "slow down"}', b'{"error": {"code": 42}}', b"[]", b"", b'{"error": null}'):
        assert decide(status_error(429, body=body)).action is RETRY


@pytest.mark.parametrize("status", [429, 503, 409])
def test_the_servers_delay_is_honoured(status):
    decision = decide(status_error(status, retry_after=42.5))
    assert decision.action is RETRY
    assert decision.retry_delay == timedelta(seconds=42.5)
    assert "42.5 s" in decision.reason


def test_a_zero_delay_retries_at_once():
    assert decide(status_error(429, retry_after=0)).retry_delay == timedelta(0)


def retry_after(value: str) -> float | None:
    """What the client makes of a ``Retry-After`` header, as the error carries it."""
    return server_delay({"retry-after": value})


def http_date(seconds_from_now: float) -> str:
    return format_datetime(datetime.now(timezone.utc) + timedelta(seconds=seconds_from_now), usegmt=True)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("30", timedelta(seconds=30)),
        ("0.25", timedelta(seconds=0.25)),
        ("1e9", timedelta(minutes=2)),  # 31 years: capped
        ("1e20", timedelta(minutes=2)),  # past timedelta's range: capped, not an OverflowError
        ("inf", timedelta(minutes=2)),
        ("-5", None),  # nonsense: the task's own retry_delay
        ("nan", None),
        ("soon", None),
        ("", None),
    ],
)
def test_odd_retry_after_headers(header, expected):
    policy = QwenRetryPolicy(max_retry_delay=timedelta(minutes=2))
    decision = decide(status_error(429, retry_after=retry_after(header)), policy)
    assert decision.action is RETRY
    assert decision.retry_delay == expected
    assert ("max_retry_delay" in decision.reason) == (expected == timedelta(minutes=2))


def test_retry_after_as_an_http_date():
    policy = QwenRetryPolicy(max_retry_delay=timedelta(minutes=2))
    soon = decide(status_error(503, retry_after=retry_after(http_date(60))), policy).retry_delay
    assert timedelta(seconds=55) <= soon <= timedelta(seconds=60)
    later = decide(status_error(503, retry_after=retry_after(http_date(86_400))), policy)
    assert later.retry_delay == timedelta(minutes=2)
    assert "max_retry_delay" in later.reason
    past = decide(status_error(503, retry_after=retry_after(http_date(-3600))), policy)
    assert past.action is RETRY
    assert past.retry_delay is None


def test_the_header_reaches_the_policy_through_the_client(api):
    from airflow_provider_qwen.client.client import QwenClient

    api.post("http://127.0.0.1:9/v1/chat/completions").mock(
        return_value=httpx.Response(429, headers={"retry-after": "1e12"}, json={"message": "busy"})
    )
    client = QwenClient(api_key=SECRET, base_url="http://127.0.0.1:9/v1", max_retries=0)
    with pytest.raises(errors.RateLimitError) as raised:
        client.send(build_request("hi"))
    decision = decide(raised.value)
    assert (decision.action, decision.retry_delay) == (RETRY, DEFAULT_MAX_RETRY_DELAY)
    assert SECRET not in decision.reason


@pytest.mark.parametrize("after", [-5.0, float("nan"), True, "30"])
def test_a_nonsense_delay_on_the_error_falls_back_to_the_tasks_own(after):
    error = status_error(429)
    error.retry_after = after
    decision = decide(error)
    assert decision.action is RETRY
    assert decision.retry_delay is None


def test_a_huge_delay_is_capped_and_says_so():
    decision = decide(
        status_error(429, retry_after=1e9), QwenRetryPolicy(max_retry_delay=timedelta(minutes=2))
    )
    assert decision.retry_delay == timedelta(minutes=2)
    assert "1e+09 s" in decision.reason
    assert "max_retry_delay" in decision.reason


@pytest.mark.parametrize(
    "error",
    [
        errors.APITimeoutError("read timeout"),
        errors.APIConnectionError("reset"),
        errors.StreamError("cut mid-answer"),
        errors.InvalidResponseError("not JSON"),
    ],
)
def test_timeouts_drops_and_cut_answers_retry(error):
    assert decide(error).action is RETRY


def test_refusals_of_our_own_fail_at_once():
    with pytest.raises(errors.InvalidRequestError) as invalid:
        build_request("hi", temperature=9)
    assert decide(invalid.value).action is FAIL
    from airflow_provider_qwen.client.window import check_window

    with pytest.raises(errors.InvalidRequestError) as window:  # over the model's context window
        check_window(build_request("hi", model="alibaba/qwen3.8-27b", max_completion_tokens=300_000))
    assert decide(window.value).action is FAIL
    assert decide(errors.BudgetExceededError("max_cost_usd would be passed")).action is FAIL


@pytest.mark.parametrize(
    "error",
    [
        errors.StructuredOutputError("still invalid", errors=["x"]),
        errors.QwenError("the model refused"),
        KeyError("x"),
        RuntimeError(),
        KeyboardInterrupt(),
    ],
)
def test_other_failures_keep_the_tasks_standard_behaviour(error):
    decision = decide(error)
    assert decision.action is DEFAULT
    assert decision.retry_delay is None


def test_a_qwen_error_is_found_in_the_chain():
    wrapped = RuntimeError("the task wrapped it")
    wrapped.__cause__ = status_error(401)
    assert decide(wrapped).action is FAIL
    context = KeyError("raised while handling")
    context.__context__ = status_error(503, retry_after=3)
    assert decide(context).retry_delay == timedelta(seconds=3)


def test_a_non_qwen_exception_raised_from_a_qwen_error():
    class ReportError(Exception):
        pass

    def task() -> None:
        try:
            raise status_error(404)
        except errors.QwenError as exc:
            raise ReportError("could not summarise") from exc

    with pytest.raises(ReportError) as raised:
        task()
    assert decide(raised.value).action is FAIL


def test_a_context_hidden_with_from_none_is_not_looked_at():
    hidden = ValueError("the author chose to hide the cause")
    hidden.__context__ = status_error(401)
    hidden.__suppress_context__ = True
    assert decide(hidden).action is DEFAULT
    hidden.__cause__ = status_error(503)  # an explicit cause is always followed
    assert decide(hidden).action is RETRY


def test_a_wrapper_without_a_decision_lets_its_cause_decide():
    from airflow_provider_qwen.batch.runner import BatchFailedError

    batch = BatchFailedError("3 of 3 items did not succeed")
    assert decide(batch).action is DEFAULT
    batch.__cause__ = status_error(401)  # the batch stopped on a bad key
    assert decide(batch).action is FAIL
    outer = errors.StructuredOutputError("invalid", errors=["x"])
    outer.__cause__ = status_error(429, retry_after=7)
    assert decide(outer).retry_delay == timedelta(seconds=7)
    # the outermost error that decides wins over what it was raised from
    timeout = errors.APITimeoutError("timed out")
    timeout.__context__ = status_error(401)
    assert decide(timeout).action is RETRY


@pytest.mark.skipif(sys.version_info < (3, 11), reason="exception groups are Python 3.11+")
def test_exception_groups_are_looked_into():
    group_of = getattr(builtins, "ExceptionGroup")  # noqa: B009 - not a name on Python 3.10
    group = group_of("the batch's tasks", [KeyError("x"), status_error(403)])
    assert decide(group).action is FAIL
    nested = group_of("outer", [ValueError("y"), group_of("inner", [status_error(502)])])
    assert decide(nested).action is RETRY


def test_cycles_and_long_chains_end():
    looped = ValueError("a")
    looped.__context__ = ValueError("b")
    looped.__context__.__context__ = looped
    assert decide(looped).action is DEFAULT
    head = current = RuntimeError("0")
    for n in range(10_000):
        current.__cause__ = RuntimeError(str(n))
        current = current.__cause__
    current.__cause__ = status_error(401)  # too deep to be looked at: the task's own behaviour
    assert decide(head).action is DEFAULT


def test_the_reason_carries_no_message_text_and_no_secret():
    error = errors.AuthenticationError(f"bad key {SECRET}", status_code=401, body={"message": SECRET})
    assert SECRET not in decide(error).reason
    echoed = errors.RateLimitError("busy", status_code=429, client_request_id=f"Bearer {SECRET}")
    decision = decide(echoed)
    assert SECRET not in decision.reason
    assert "client_request_id" not in decision.reason  # not an id we could have sent: left out
    assert decide(errors.AuthenticationError("x", status_code=401, client_request_id="qwen-ab12")).reason == (
        "AuthenticationError status=401 client_request_id=qwen-ab12: the API key is missing or wrong "
        "(401); another try would fail the same way"
    )


def test_an_error_restored_from_a_trigger_event_decides_alike():
    error = status_error(429, retry_after=12)
    again = errors.error_from_dict(errors.error_to_dict(error))
    assert decide(again) == decide(error)
    forged = errors.error_from_dict({"type": "RateLimitError", "status_code": "429", "retry_after": "1e30"})
    assert decide(forged).action is DEFAULT  # no status to go by: the task's standard behaviour


def test_structured_output_errors_follow_the_option():
    error = errors.StructuredOutputError("still invalid", errors=["x"])
    assert decide(error, QwenRetryPolicy(on_structured_output_error="retry")).action is RETRY
    assert decide(error, QwenRetryPolicy(on_structured_output_error=RetryAction.FAIL)).action is FAIL
    assert decide(error, QwenRetryPolicy(on_structured_output_error=" Default ")).action is DEFAULT
    from airflow_provider_qwen.agent.errors import ToolArgumentsError

    assert (
        decide(ToolArgumentsError("bad"), QwenRetryPolicy(on_structured_output_error="fail")).action is FAIL
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_retry_delay": timedelta(0)}, "max_retry_delay"),
        ({"max_retry_delay": timedelta(seconds=-1)}, "max_retry_delay"),
        ({"max_retry_delay": timedelta(days=2)}, "at most 1 day"),
        ({"max_retry_delay": 60}, "must be a timedelta"),
        ({"max_retry_delay": None}, "must be a timedelta"),
        ({"max_retry_delay": "15m"}, "must be a timedelta"),
        ({"on_structured_output_error": "maybe"}, "'retry', 'fail', 'default'"),
        ({"on_structured_output_error": True}, "on_structured_output_error=True"),
        ({"on_structured_output_error": None}, "on_structured_output_error=None"),
    ],
)
def test_bad_options_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        QwenRetryPolicy(**kwargs)
    with pytest.raises(TypeError):
        QwenRetryPolicy(timedelta(minutes=1))  # keyword-only: no silent positional mix-up


def test_serialize_round_trips_every_option():
    for policy in (
        QwenRetryPolicy(),
        QwenRetryPolicy(max_retry_delay=timedelta(seconds=90.5), on_structured_output_error="retry"),
        QwenRetryPolicy(max_retry_delay=timedelta(days=1), on_structured_output_error="fail"),
    ):
        data = policy.serialize()
        assert data == json.loads(json.dumps(data))  # JSON-safe
        assert QwenRetryPolicy.deserialize(data) == policy
        assert repr(QwenRetryPolicy.deserialize(data)) == repr(policy)
    assert QwenRetryPolicy.deserialize({}) == QwenRetryPolicy()  # an older, shorter form
    for bad in ({"max_retry_delay": "90"}, {"max_retry_delay": float("nan")}, {"max_retry_delay": 0}, []):
        with pytest.raises(ValueError, match=r"max_retry_delay|not a dict"):
            QwenRetryPolicy.deserialize(bad)


def _qwen_dag(policy: QwenRetryPolicy):
    from airflow.sdk import DAG

    from airflow_provider_qwen.operators import QwenChatOperator

    with DAG("qwen_retry_policy", schedule=None, default_args={"retries": 2, "retry_policy": policy}) as dag:
        QwenChatOperator(task_id="from_defaults", prompt="hi")
        QwenChatOperator(task_id="own", prompt="hi", retries=3, retry_policy=QwenRetryPolicy())
    return dag


def test_it_survives_dag_serialisation():
    """Airflow stores only ``has_retry_policy`` (the worker parses the DAG file and holds the object):
    the serialised DAG must say a policy is set, stay the same from parse to parse, and hold no repr."""
    from airflow.serialization.serialized_objects import DagSerialization

    policy = QwenRetryPolicy(max_retry_delay=timedelta(seconds=90))
    first = DagSerialization.to_dict(_qwen_dag(policy))
    second = DagSerialization.to_dict(_qwen_dag(QwenRetryPolicy(max_retry_delay=timedelta(seconds=90))))
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)  # a stable DAG version
    assert "QwenRetryPolicy" not in json.dumps(first)
    again = DagSerialization.from_dict(first)
    assert again.get_task("from_defaults").has_retry_policy
    assert again.get_task("own").has_retry_policy
    parsed = _qwen_dag(policy)
    assert parsed.get_task("from_defaults").retry_policy == policy
    assert parsed.get_task("from_defaults").retries == 2


def test_the_task_runner_evaluates_it_on_the_worker():
    """The worker's own call (keyword arguments, its logging of the reason)."""
    from types import SimpleNamespace

    import structlog
    from airflow.sdk.execution_time.task_runner import _evaluate_retry_policy

    task = _qwen_dag(QwenRetryPolicy()).get_task("own")
    ti = SimpleNamespace(task=task, try_number=1, _ti_context_from_server=SimpleNamespace(max_tries=4))
    log = structlog.get_logger()
    assert _evaluate_retry_policy(ti, status_error(401), log).action is FAIL
    retried = _evaluate_retry_policy(ti, RuntimeError("wrapped"), log)
    assert retried.action is DEFAULT
    error = RuntimeError("wrapped")
    error.__cause__ = status_error(429, retry_after=20)
    assert _evaluate_retry_policy(ti, error, log).retry_delay == timedelta(seconds=20)


def test_the_module_is_light_to_import():
    """At DAG parse time it adds nothing to what the DAG file's ``airflow.sdk`` import loads."""
    code = (
        "import sys, airflow.sdk, airflow.sdk.definitions.retry_policy, airflow_provider_qwen\n"
        "before = set(sys.modules)\n"
        "import airflow_provider_qwen.retry_policy as p; p.QwenRetryPolicy()\n"
        "print(sorted(set(sys.modules) - before))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "['airflow_provider_qwen.retry_policy']"


def test_it_imports_on_an_airflow_without_retry_policies():
    """Airflow < 3.3: the module imports and decides alike (default_args drop it there)."""
    code = (
        "import sys; sys.modules['airflow.sdk.definitions.retry_policy'] = None\n"
        "from airflow_provider_qwen.retry_policy import QwenRetryPolicy, RetryAction\n"
        "from airflow_provider_qwen.client.errors import AuthenticationError\n"
        "d = QwenRetryPolicy().evaluate(AuthenticationError('x', status_code=401), 1, 2)\n"
        "print(d.action is RetryAction.FAIL, type(d).__module__)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True", "airflow_provider_qwen.retry_policy"]


def test_it_chains_after_rules_of_ones_own():
    """As docs/retry-policy.md shows it (ChainRetryPolicy: Airflow 3.4, on 3.3 from the compat provider)."""
    from airflow.providers.common.compat.sdk import ChainRetryPolicy, ExceptionRetryPolicy, RetryRule

    chain = ChainRetryPolicy(
        [ExceptionRetryPolicy(rules=[RetryRule(exception=PermissionError, action=FAIL)]), QwenRetryPolicy()]
    )
    assert decide(PermissionError("no"), chain).action is FAIL
    decision = decide(status_error(429, retry_after=9), chain)
    assert (decision.action, decision.retry_delay) == (RETRY, timedelta(seconds=9))
    assert decision.reason.startswith("QwenRetryPolicy: RateLimitError status=429")
    assert decide(KeyError("x"), chain).action is DEFAULT


def test_it_copies_and_pickles_like_the_rest_of_a_task():
    """DAG code deep-copies tasks (``partial_subset``, a task group's copies): the policy goes along."""
    import copy
    import pickle

    policy = QwenRetryPolicy(max_retry_delay=timedelta(seconds=30), on_structured_output_error="fail")
    for again in (copy.deepcopy(policy), pickle.loads(pickle.dumps(policy))):
        assert again == policy
        assert decide(status_error(429, retry_after=99), again).retry_delay == timedelta(seconds=30)
    dag = _qwen_dag(policy)
    subset = dag.partial_subset("own", include_upstream=False)
    assert subset.get_task("own").retry_policy == QwenRetryPolicy()


def test_a_mapped_task_keeps_its_policy():
    from airflow.sdk import DAG
    from airflow.serialization.serialized_objects import DagSerialization

    from airflow_provider_qwen.operators import QwenChatOperator

    with DAG("qwen_mapped_policy", schedule=None) as dag:
        QwenChatOperator.partial(task_id="chat", retries=2, retry_policy=QwenRetryPolicy()).expand(
            prompt=["a", "b"]
        )
    serialized = DagSerialization.to_dict(dag)
    assert "QwenRetryPolicy" not in json.dumps(serialized)
    assert DagSerialization.from_dict(serialized).get_task("chat").partial_kwargs.get("has_retry_policy")


def test_a_batch_stopped_by_a_wrong_key_fails_at_once(mocker, tmp_path, monkeypatch):
    """The batch's failure is raised from what stopped it, so the policy sees the 401 behind it."""
    from airflow_provider_qwen.batch.runner import BatchFailedError
    from airflow_provider_qwen.operators import QwenBatchOperator
    from tests.support.batch_fakes import BatchTI, with_async_client

    monkeypatch.setenv("AIRFLOW__QWEN__STORAGE_BASE", f"file://{tmp_path}")

    def wrong_key(request):
        raise errors.AuthenticationError("invalid api key", status_code=401)

    with_async_client(mocker, wrong_key)
    op = QwenBatchOperator(task_id="batch", prompt="{{ item }}", items=["a", "b", "c"], retries=3)
    ti = BatchTI()
    context = {"ti": ti, "task_instance": ti, "params": {}, "run_id": ti.run_id}
    op.render_template_fields(context)
    with pytest.raises(BatchFailedError) as failed:
        op.execute(context)
    assert isinstance(failed.value.__cause__, errors.AuthenticationError)
    assert decide(failed.value).action is RetryAction.FAIL
