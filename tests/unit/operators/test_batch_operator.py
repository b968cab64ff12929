"""QwenBatchOperator with a scripted async client: ordering, items as data, failures, budget, cost."""

from __future__ import annotations

import gc
from decimal import Decimal

import pendulum
import pytest
from airflow.sdk import DAG
from airflow.sdk.exceptions import AirflowFailException
from pydantic import BaseModel

from airflow_provider_qwen.batch import load_result
from airflow_provider_qwen.batch.runner import BatchFailedError
from airflow_provider_qwen.client.errors import (
    AuthenticationError,
    InvalidRequestError,
    RateLimitError,
    ServerError,
)
from airflow_provider_qwen.operators import QwenBatchOperator
from tests.support.batch_fakes import USD, BatchTI, echo, user_text, with_async_client
from tests.support.operator_fakes import answer, run


@pytest.fixture(autouse=True)
def storage(tmp_path, monkeypatch):
    """Checkpoints and stored outputs in a fresh folder per test."""
    base = tmp_path / "qwen-storage"
    monkeypatch.setenv("AIRFLOW__QWEN__STORAGE_BASE", f"file://{base}")
    return base


def batch(**kwargs) -> QwenBatchOperator:
    kwargs.setdefault("task_id", "batch")
    kwargs.setdefault("prompt", "Summarise: {{ item }}")
    kwargs.setdefault("progress_interval", 60)
    return QwenBatchOperator(**kwargs)


def test_results_are_aligned_with_items_whatever_the_finishing_order(mocker):
    items = [f"doc {i}" for i in range(20)]
    # earlier items take longer, so they finish last
    client = with_async_client(mocker, lambda r: ((20 - int(user_text(r).split()[-1])) * 0.002, echo(r)))
    result, ti = run(batch(items=items, max_concurrency=8), BatchTI())
    assert result == [f"summary of: Summarise: doc {i}" for i in range(20)]
    assert client.peak_in_flight == 8
    report = ti.pushed["qwen_batch"]
    assert (report["total"], report["succeeded"], report["failed"], report["errors"]) == (20, 20, 0, [])


def test_the_heap_before_the_batch_is_frozen_while_it_runs_and_released_after(mocker):
    frozen_during: list[int] = []

    def reply(request):
        frozen_during.append(gc.get_freeze_count())
        return echo(request)

    with_async_client(mocker, reply)
    before = gc.get_freeze_count()
    run(batch(items=["a", "b"]), BatchTI())
    assert min(frozen_during) > before  # full collections skip what existed before the batch
    assert gc.get_freeze_count() == before


def test_item_text_is_data_never_a_template(mocker):
    items = ["{{ 7*7 }} and {% raw %}x{% endraw %}", {"title": "{{ run_id }}", "text": "{% if %}"}]
    client = with_async_client(mocker)
    op = batch(
        items=items, prompt="#{{ index }} {{ item.title if item is mapping else item }} ({{ run_id }})"
    )
    run(op, BatchTI(), run_id="manual__9")
    assert client.prompts == [
        "#0 {{ 7*7 }} and {% raw %}x{% endraw %} (manual__9)",
        "#1 {{ run_id }} (manual__9)",
    ]


def test_prompt_is_not_rendered_by_airflow_but_per_item(mocker):
    with_async_client(mocker)
    op = batch(items=["a"], prompt="Say {{ item }} for {{ params.who }}")
    op.render_template_fields({"params": {"who": "Ada"}, "ti": BatchTI(), "run_id": "r"})
    assert op.prompt == "Say {{ item }} for {{ params.who }}"


def test_prompt_file_is_found_through_the_dag_template_env(mocker, tmp_path):
    (tmp_path / "ask.j2").write_text("Title: {{ item.title }} / {{ params.tone }}")
    client = with_async_client(mocker)
    with DAG("d", schedule=None, start_date=pendulum.datetime(2024, 1, 1)) as dag:
        dag.fileloc = str(tmp_path / "d.py")
        op = batch(items=[{"title": "T1"}, {"title": "T2"}], prompt="ask.j2")
    run(op, BatchTI(), params={"tone": "dry"})
    assert client.prompts == ["Title: T1 / dry", "Title: T2 / dry"]


def test_system_prompt_and_generation_params_reach_every_request(mocker):
    client = with_async_client(mocker)
    op = batch(items=["a", "b"], system_prompt="Be {{ params.style }}.", temperature=0.2)
    run(op, BatchTI(), params={"style": "brief"})
    for body in client.bodies:
        assert body["messages"][0] == {"role": "system", "content": "Be brief."}
        assert body["temperature"] == 0.2


def test_failed_item_gives_none_and_fails_the_task_after_the_others_finished(mocker):
    def reply(request):
        return (
            ServerError("upstream broke", status_code=502) if "doc 3" in user_text(request) else echo(request)
        )

    client = with_async_client(mocker, reply)
    ti = BatchTI()
    with pytest.raises(BatchFailedError, match=r"1 of 6 item\(s\) did not succeed .* max_failures=0") as info:
        run(batch(items=[f"doc {i}" for i in range(6)], max_concurrency=2), ti)
    assert not isinstance(info.value, AirflowFailException)  # a retry sends the failed item again
    assert len(client.requests) == 6  # every other item was still sent
    report = ti.pushed["qwen_batch"]
    assert report["succeeded"] == 5
    assert report["failed"] == 1
    assert report["errors"] == [{"index": 3, "error": "ServerError: upstream broke (status=502)"}]
    assert ti.pushed["qwen_cost"]["requests"] == 5


@pytest.mark.parametrize(("max_failures", "fails"), [(1, False), (0.25, False), (0.2, True), (0, True)])
def test_max_failures_as_count_or_fraction(mocker, max_failures, fails):
    with_async_client(mocker, lambda r: ServerError("x") if "doc 0" in user_text(r) else echo(r))
    op = batch(items=[f"doc {i}" for i in range(4)], max_failures=max_failures)
    if fails:
        with pytest.raises(BatchFailedError):
            run(op, BatchTI())
    else:
        result, _ = run(op, BatchTI())
        assert result[0] is None
        assert result[1] == "summary of: Summarise: doc 1"


def test_budget_stops_new_items_and_reports_the_unstarted(mocker):
    client = with_async_client(mocker, lambda r: answer("ok", usd=Decimal("0.01")))
    ti = BatchTI()
    # each request may cost up to ~0.0078 USD (1000 output tokens at 7.8 USD/M) plus its prompt
    op = batch(items=[f"doc {i}" for i in range(10)], max_concurrency=1, max_cost_usd="0.035",
               max_completion_tokens=1000)  # fmt: skip
    with pytest.raises(BatchFailedError, match="not started") as info:
        run(op, ti)
    assert isinstance(info.value, AirflowFailException)  # a retry would be refused too
    report = ti.pushed["qwen_batch"]
    assert report["succeeded"] == len(client.requests) == 3
    assert report["unstarted"] == 7
    assert report["stopped"].startswith("budget: max_cost_usd=0.035 would be passed")
    assert Decimal(ti.pushed["qwen_cost"]["usd_spent"]) == Decimal("0.03")


def test_budget_counts_requests_in_flight(mocker):
    """Fifty concurrent requests must not each pass the cap on what was paid before any answered."""
    client = with_async_client(mocker, lambda r: (0.01, answer("ok", usd=Decimal("0.001"))))
    op = batch(items=[f"doc {i}" for i in range(50)], max_concurrency=50, max_cost_usd="0.05",
               max_completion_tokens=1000, max_failures=1.0)  # fmt: skip
    ti = BatchTI()
    run(op, ti)
    worst = Decimal("0.0078") + Decimal("0.00002")  # output cap at 7.8 USD/M + a short prompt, roughly
    assert client.peak_in_flight <= int(Decimal("0.05") / worst)  # each in flight holds its worst case
    assert Decimal(ti.pushed["qwen_cost"]["usd_spent"]) <= Decimal("0.05")


def test_fatal_error_stops_the_batch_early(mocker):
    client = with_async_client(mocker, lambda r: AuthenticationError("bad key", status_code=401))
    ti = BatchTI()
    with pytest.raises(BatchFailedError, match="stopped early: fatal error"):
        run(batch(items=[f"doc {i}" for i in range(100)], max_concurrency=4), ti)
    assert len(client.requests) <= 4
    assert ti.pushed["qwen_batch"]["unstarted"] >= 96


def test_rate_limits_lower_concurrency_and_the_batch_still_finishes(mocker):
    limit = 3

    def reply(request):
        if client.in_flight > limit:
            return RateLimitError("too many concurrent requests", status_code=429, retry_after=0.01)
        return (0.005, echo(request))

    client = with_async_client(mocker, reply)
    result, ti = run(batch(items=[f"doc {i}" for i in range(40)], max_concurrency=16), BatchTI())
    assert result == [f"summary of: Summarise: doc {i}" for i in range(40)]
    report = ti.pushed["qwen_batch"]
    assert report["rate_limited"] > 0
    assert report["concurrency"]["lowest"] <= 4
    assert report["succeeded"] == 40
    assert ti.pushed["qwen_cost"]["requests"] == 40  # a 429 is not charged


def test_a_retry_after_over_120_s_fails_the_item_and_stops_the_batch(mocker):
    """A longer server delay stops retrying (docs/protocol.md, "Retries"); a limit of minutes means
    the account is spent."""
    client = with_async_client(
        mocker, lambda r: RateLimitError("quota spent", status_code=429, retry_after=300)
    )
    ti = BatchTI()
    with pytest.raises(BatchFailedError, match=r"stopped early: rate limit: the server asked to wait 300 s"):
        run(batch(items=[f"doc {i}" for i in range(20)], max_concurrency=2), ti)
    assert len(client.requests) <= 2  # the items in flight; nothing sent again, nothing new started
    report = ti.pushed["qwen_batch"]
    assert report["failed"] == len(client.requests)
    assert report["unstarted"] == 20 - len(client.requests)
    assert report["rate_limited"] == len(client.requests)
    assert report["elapsed_s"] < 5  # neither waited 300 s nor slept a backoff
    assert report["errors"][0]["error"].startswith("RateLimitError: quota spent")


def test_a_retry_after_over_120_s_stops_the_batch_but_a_retry_of_the_task_may_resume(mocker):
    with_async_client(mocker, lambda r: RateLimitError("quota spent", status_code=429, retry_after=121))
    with pytest.raises(BatchFailedError) as info:
        run(batch(items=["a", "b"], max_concurrency=1), BatchTI())
    assert not isinstance(info.value, AirflowFailException)  # Airflow's retry comes back later


def test_a_429_without_a_usable_retry_after_backs_off_before_sending_again(mocker):
    from airflow_provider_qwen.batch.sender import RateLimitedSender

    sleeps = []

    async def sleep(seconds):
        sleeps.append(seconds)

    mocker.patch.object(RateLimitedSender, "sleep", new=staticmethod(sleep))
    replies = iter(
        [
            RateLimitError("slow down", status_code=429, retry_after=None),
            RateLimitError("slow down", status_code=429, retry_after=-3),  # an HTTP date in the past
            echo,
        ]
    )

    def reply(request):
        outcome = next(replies)
        return outcome(request) if callable(outcome) else outcome

    client = with_async_client(mocker, reply)
    result, ti = run(batch(items=["a"]), BatchTI())
    assert result == ["summary of: Summarise: a"]
    assert len(client.requests) == 3
    assert len(sleeps) == 2
    assert 0.375 <= sleeps[0] <= 0.5  # backoff 0.5 s, then 1 s, each times a jitter of 0.75 to 1
    assert 0.75 <= sleeps[1] <= 1.0
    assert ti.pushed["qwen_batch"]["rate_limited"] == 2


def test_rate_limit_retries_run_out_and_fail_the_item(mocker):
    with_async_client(mocker, lambda r: RateLimitError("slow down", status_code=429, retry_after=0.001))
    ti = BatchTI()
    with pytest.raises(BatchFailedError):
        run(batch(items=["a"], max_rate_limit_retries=2), ti)
    assert ti.pushed["qwen_batch"]["errors"][0]["error"].startswith("RateLimitError: slow down")


class Verdict(BaseModel):
    label: str
    score: float


def test_structured_results_reuse_the_tool_call_machinery_with_repairs(mocker):
    def reply(request):
        body = request.to_body()
        if "doc 1" in user_text(request) and body["messages"][-1]["role"] != "tool":
            return answer(None, tool_calls=[("c1", "Verdict", '{"label": "x"}')])  # missing score
        return answer(None, tool_calls=[("c2", "Verdict", {"label": user_text(request)[-5:], "score": 1})])

    client = with_async_client(mocker, reply)
    result, ti = run(batch(items=["doc 0", "doc 1"], prompt="{{ item }}", output_model=Verdict), BatchTI())
    assert result == [{"label": "doc 0", "score": 1.0}, {"label": "doc 1", "score": 1.0}]
    assert len(client.requests) == 3
    repair = next(b for b in client.bodies if b["messages"][-1]["role"] == "tool")
    assert repair["tool_choice"] == {"type": "function", "function": {"name": "Verdict"}}
    assert "rejected" in repair["messages"][-1]["content"]
    assert ti.pushed["qwen_cost"]["requests"] == 3


def test_cost_record_sums_every_request_exactly(mocker):
    with_async_client(mocker)
    _, ti = run(batch(items=[f"d{i}" for i in range(7)]), BatchTI())
    assert ti.pushed["qwen_cost"]["requests"] == 7
    assert Decimal(ti.pushed["qwen_cost"]["usd_spent"]) == 7 * USD
    assert ti.pushed["qwen_cost"]["credits_used"] == 7 * 2000
    assert ti.pushed["qwen_batch"]["usd_spent"] == ti.pushed["qwen_cost"]["usd_spent"]


def test_large_outputs_go_to_storage_and_xcom_carries_a_reference(mocker, storage):
    big = "x" * 5000
    with_async_client(mocker, lambda r: answer(big if "big" in user_text(r) else "small"))
    result, ti = run(batch(items=["big", "tiny"], output_size_threshold=1000), BatchTI())
    assert result[1] == "small"
    ref = result[0]
    assert ref["bytes"] == 5000
    assert ref["stored_result"].startswith(f"file://{storage}/batch_dag/manual__1/batch/-1/outputs/")
    assert load_result(ref) == big
    assert load_result("small") == "small"
    assert ti.pushed["qwen_batch"]["stored_outputs"] == 1


class ListLog:
    """Collects log lines (Airflow's task logger does not reach caplog)."""

    def __init__(self):
        self.lines = []

    def _add(self, message, *args, **_):
        self.lines.append(message % args if args else message)

    info = warning = error = exception = debug = _add


def test_progress_is_logged_periodically_not_per_item(mocker):
    log = ListLog()
    mocker.patch.object(QwenBatchOperator, "log", new=log)
    with_async_client(mocker, lambda r: (0.001, echo(r)))
    run(batch(items=[f"d{i}" for i in range(300)], max_concurrency=10, progress_interval=0.03), BatchTI())
    progress = [line for line in log.lines if line.startswith("batch: ") and " done (" in line]
    assert 1 <= len(progress) < 30
    assert all("/300 done" in line and "USD spent" in line and "items/s" in line for line in progress)
    assert any(line.startswith("batch finished: 300/300 succeeded") for line in log.lines)
    assert len(log.lines) < 40  # never a line per item


def test_empty_items_send_nothing(mocker):
    client = with_async_client(mocker)
    result, ti = run(batch(items=[]), BatchTI())
    assert result == []
    assert client.requests == []
    assert ti.pushed["qwen_batch"]["total"] == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"items": "not a list"}, "items rendered to a string that is not a JSON list"),
        ({"items": [1, 2]}, r"items\[0\] is a int"),
        ({"max_failures": -1}, "max_failures=-1 is not allowed"),
        ({"max_failures": 1.5}, "max_failures=1.5 is not allowed"),
        ({"max_concurrency": 0}, "max_concurrency=0 is not allowed"),
        ({"prompt": "{{ item "}, "prompt is not a valid Jinja template"),
        ({"max_input_tokens": 10}, "max_input_tokens=10 is not allowed"),
        ({"requests_per_minute": 0}, "requests_per_minute=0 is not allowed"),
        ({"temperature": 5}, "temperature=5"),
    ],
)
def test_bad_arguments_fail_before_any_request(mocker, kwargs, message):
    client = with_async_client(mocker)
    kwargs.setdefault("items", ["a"])
    with pytest.raises(InvalidRequestError, match=message):
        run(batch(**kwargs), BatchTI())
    assert client.requests == []


def test_items_from_an_upstream_task_set_the_dependency(mocker):
    from airflow.sdk import task

    with DAG("d", schedule=None, start_date=pendulum.datetime(2024, 1, 1)):

        @task
        def produce():
            return ["a"]

        op = batch(items=produce())
    assert op.upstream_task_ids == {"produce"}


class _Arg:
    """Stands in for an XComArg: resolved at render time to what the upstream task returned."""

    def resolve(self, context):
        return ["{{ 1 + 1 }}", {"text": "{% raw %}"}]


def test_resolved_items_are_not_rendered(mocker):
    client = with_async_client(mocker)
    run(batch(items=_Arg(), prompt="{{ item.text if item is mapping else item }}"), BatchTI())
    assert client.prompts == ["{{ 1 + 1 }}", "{% raw %}"]


def test_literal_items_are_not_rendered_by_airflow(mocker):
    client = with_async_client(mocker)
    run(batch(items=["{{ run_id }}"], prompt="{{ item }}"), BatchTI())
    assert client.prompts == ["{{ run_id }}"]


def test_string_items_are_the_authors_template_rendering_to_a_json_list(mocker):
    client = with_async_client(mocker)
    run(
        batch(items="{{ params.docs | tojson }}", prompt="{{ item }}"), BatchTI(), params={"docs": ["x", "y"]}
    )
    assert client.prompts == ["x", "y"]


def test_chunk_is_none_for_a_whole_item_under_strict_undefined(mocker):
    """DAGs render with StrictUndefined: ``{% if chunk %}`` must work for items that were not split."""
    import jinja2

    client = with_async_client(mocker)
    with DAG(
        "d",
        schedule=None,
        start_date=pendulum.datetime(2024, 1, 1),
        template_undefined=jinja2.StrictUndefined,
    ):
        op = batch(items=["a"], prompt="{{ item }}{% if chunk %} part {{ chunk.index }}{% endif %}")
    run(op, BatchTI())
    assert client.prompts == ["a"]


def test_requests_per_minute_caps_the_start_rate(mocker):
    import time

    starts = []
    with_async_client(mocker, lambda r: starts.append(time.monotonic()) or echo(r))
    run(batch(items=[f"d{i}" for i in range(6)], requests_per_minute=3000), BatchTI())  # one per 20 ms
    assert len(starts) == 6
    # a lower bound only (load can slow starts, never speed them); spacing itself is tested with a
    # fake clock in test_batch_limiter.py
    assert starts[-1] - starts[0] >= 5 * 0.020 * 0.95


def test_a_none_item_or_system_prompt_fails_the_task_before_any_request(mocker):
    from airflow_provider_qwen.client.errors import InvalidRequestError

    client = with_async_client(mocker, lambda r: answer("ok"))
    with pytest.raises(InvalidRequestError, match=r"items\[1\] is a NoneType"):
        run(batch(items=["doc 0", None, "doc 2"]), BatchTI())
    with pytest.raises(InvalidRequestError, match=r"system_prompt"):
        run(batch(items=["doc 0"], system_prompt="{{ params.persona }}"), BatchTI(), params={"persona": None})
    assert client.requests == []
