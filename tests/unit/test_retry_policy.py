"""QwenRetryPolicy's decision for each error class, through exception chains, with the server's delays."""

from __future__ import annotations

from datetime import timedelta

import pytest
from airflow.sdk.definitions.retry_policy import RetryAction

from airflow_provider_qwen.client import errors
from airflow_provider_qwen.client.request import build_request
from airflow_provider_qwen.retry_policy import QwenRetryPolicy

POLICY = QwenRetryPolicy()
SECRET = "sk-live-SECRET-123456"


def decide(exception: BaseException, policy: QwenRetryPolicy = POLICY):
    return policy.evaluate(exception, try_number=1, max_tries=3)


def status_error(status: int, retry_after: float | None = None) -> errors.APIStatusError:
    return errors.error_for_status(
        status, b'{"error": {"message": "nope"}}', retry_after=retry_after, client_request_id="qwen-1"
    )


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422, 451])
def test_client_errors_fail_at_once(status):
    decision = decide(status_error(status))
    assert decision.action is RetryAction.FAIL
    assert f"status={status}" in decision.reason


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504, 529])
def test_transient_statuses_retry_after_the_tasks_delay(status):
    decision = decide(status_error(status))
    assert decision.action is RetryAction.RETRY
    assert decision.retry_delay is None


@pytest.mark.parametrize("status", [429, 503])
def test_the_servers_delay_is_honoured(status):
    decision = decide(status_error(status, retry_after=42.5))
    assert decision.action is RetryAction.RETRY
    assert decision.retry_delay == timedelta(seconds=42.5)


def test_a_huge_delay_is_capped_and_says_so():
    decision = decide(
        status_error(429, retry_after=1e9), QwenRetryPolicy(max_retry_delay=timedelta(minutes=2))
    )
    assert decision.retry_delay == timedelta(minutes=2)
    assert "max_retry_delay" in decision.reason


@pytest.mark.parametrize("after", [-5.0, float("nan"), float("inf")])
def test_a_nonsense_delay_falls_back_to_the_tasks_own(after):
    error = status_error(429)
    error.retry_after = after
    decision = decide(error)
    assert decision.action is RetryAction.RETRY
    assert decision.retry_delay is None


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
    assert decide(error).action is RetryAction.RETRY


def test_refusals_of_our_own_fail_at_once():
    with pytest.raises(errors.InvalidRequestError) as invalid:
        build_request("hi", temperature=9)
    assert decide(invalid.value).action is RetryAction.FAIL
    assert decide(errors.BudgetExceededError("max_cost_usd would be passed")).action is RetryAction.FAIL


@pytest.mark.parametrize(
    "error",
    [
        errors.StructuredOutputError("still invalid", errors=["x"]),
        errors.QwenError("the model refused"),
        KeyError("x"),
    ],
)
def test_other_failures_keep_the_tasks_standard_behaviour(error):
    assert decide(error).action is RetryAction.DEFAULT


def test_a_qwen_error_is_found_in_the_chain():
    wrapped = RuntimeError("the task wrapped it")
    wrapped.__cause__ = status_error(401)
    assert decide(wrapped).action is RetryAction.FAIL
    context = KeyError("raised while handling")
    context.__context__ = status_error(503, retry_after=3)
    assert decide(context).retry_delay == timedelta(seconds=3)
    looped = ValueError("a")
    looped.__context__ = ValueError("b")
    looped.__context__.__context__ = looped  # a cycle ends the walk
    assert decide(looped).action is RetryAction.DEFAULT


def test_the_reason_carries_no_message_text():
    error = errors.AuthenticationError(f"bad key {SECRET}", status_code=401)
    assert SECRET not in decide(error).reason


def test_bad_options_are_refused():
    for bad in (timedelta(0), 60, None):
        with pytest.raises(ValueError, match="max_retry_delay"):
            QwenRetryPolicy(max_retry_delay=bad)


def test_it_round_trips_and_survives_dag_serialisation():
    from airflow.sdk import DAG
    from airflow.serialization.serialized_objects import DagSerialization

    from airflow_provider_qwen.operators import QwenChatOperator

    policy = QwenRetryPolicy(max_retry_delay=timedelta(seconds=90))
    assert QwenRetryPolicy.deserialize(policy.serialize()) == policy
    with DAG("qwen_retry_policy", schedule=None) as dag:
        QwenChatOperator(task_id="chat", prompt="hi", retries=3, retry_policy=policy)
    serialized = DagSerialization.to_dict(dag)
    again = DagSerialization.from_dict(serialized)
    assert again.get_task("chat").has_retry_policy


def test_the_module_is_light_to_import():
    import subprocess
    import sys

    code = (
        "import sys; import airflow_provider_qwen.retry_policy; "
        "print(any(m.startswith(('aiohttp', 'airflow_provider_qwen.client')) for m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
