"""OpenLineage facets of the operators: the ``qwen`` run facet from the try's cost, the datasets of a
batch over files, and what reaches an event through the OpenLineage provider's own extractor,
redactor and file transport (no secret: credentials in URLs, a server echoing the key)."""

from __future__ import annotations

import json
import pickle
from types import SimpleNamespace

import jsonschema
import pytest
from airflow.providers.openlineage.extractors import OperatorLineage
from openlineage.client.serde import Serde

from airflow_provider_qwen.client.errors import Charge, RateLimitError, StreamError
from airflow_provider_qwen.cost.record import CostRecord
from airflow_provider_qwen.operators import QwenBatchOperator, QwenChatOperator, lineage
from airflow_provider_qwen.operators.lineage import (
    INFERENCE_IDS_IN_FACET,
    dataset_name,
    qwen_run_facet,
    unmetered_facet,
)
from tests.support.batch_fakes import BatchTI, with_async_client
from tests.support.operator_fakes import answer, run, with_client

KEY = "sk-live-LINEAGE-0451"
# The facet's shape as docs/lineage.md describes it (the second part of its allOf on RunFacet); a
# null field is left out of the JSON (openlineage-python's Serde), so the nullable ones are optional.
FACET_SCHEMA = {
    "type": "object",
    "required": [
        "_producer",
        "_schemaURL",
        "requests",
        "promptTokens",
        "completionTokens",
        "reasoningTokens",
        "totalTokens",
        "creditsUsed",
        "usdSpent",
        "usdUnsettled",
        "estimated",
        "inferenceIdsNotListed",
    ],
    "properties": {
        "_producer": {"type": "string", "pattern": "^https://"},
        "_schemaURL": {"type": "string", "pattern": "^https://"},
        "model": {"type": ["string", "null"]},
        **{
            name: {"type": "integer", "minimum": 0}
            for name in (
                "requests",
                "promptTokens",
                "completionTokens",
                "reasoningTokens",
                "totalTokens",
                "creditsUsed",
                "inferenceIdsNotListed",
            )
        },
        "usdSpent": {"type": "string", "pattern": r"^\d+(\.\d+)?$"},
        "usdUnsettled": {"type": "string", "pattern": r"^\d+(\.\d+)?$"},
        "estimated": {"type": "boolean"},
        "tryNumber": {"type": ["integer", "null"]},
        "inferenceIds": {
            "type": "array",
            "maxItems": INFERENCE_IDS_IN_FACET,
            "items": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"},
        },
        "taskRequests": {"type": ["integer", "null"]},
        "taskUsdSpent": {"type": ["string", "null"]},
        "taskEstimated": {"type": ["boolean", "null"]},
    },
    "additionalProperties": False,
}


def as_json(facet) -> dict:
    data = json.loads(Serde.to_json(facet))
    jsonschema.validate(data, FACET_SCHEMA)
    return data


def facet_of(lineage_: OperatorLineage) -> dict:
    return as_json(lineage_.run_facets["qwen"])


def record(**fields) -> CostRecord:
    return CostRecord.from_xcom({"model": "alibaba/qwen3.7-max", "try_number": 1, **fields})


# -- the run facet ------------------------------------------------------------------------------


def test_a_chat_reports_its_model_tokens_cost_and_inference_id(mocker):
    with_client(mocker, QwenChatOperator, answer("hello"))
    op = QwenChatOperator(task_id="chat", prompt="hi")
    _, ti = run(op)
    facet = facet_of(op.get_openlineage_facets_on_complete(ti))
    cost = ti.pushed["qwen_cost"]
    assert facet["model"] == cost["model"] == "alibaba/qwen3.7-max"
    assert (facet["requests"], facet["promptTokens"], facet["completionTokens"], facet["totalTokens"]) == (
        1,
        10,
        5,
        15,
    )
    assert (facet["creditsUsed"], facet["usdSpent"], facet["estimated"]) == (
        cost["credits_used"],
        cost["usd_spent"],
        False,
    )
    assert (facet["taskRequests"], facet["taskUsdSpent"], facet["taskEstimated"]) == (1, "0.001", False)
    assert facet["tryNumber"] == 1
    assert facet["inferenceIds"] == ["inf-1"]
    assert facet["inferenceIdsNotListed"] == 0
    assert facet["_schemaURL"].endswith("docs/lineage.md#the-qwen-run-facet")
    assert "airflow-provider-qwen" in facet["_producer"]


def test_a_failed_try_still_reports_what_it_spent(mocker):
    cut = StreamError("cut after the answer began", charge=Charge(partial=answer("half an ans")))
    with_client(mocker, QwenChatOperator, cut)
    op = QwenChatOperator(task_id="chat", prompt="hi")
    with pytest.raises(StreamError):
        run(op)
    facet = facet_of(op.get_openlineage_facets_on_failure(None))
    assert facet["requests"] == 1  # the cut answer was paid for
    assert facet["usdSpent"] == "0.001"


def test_a_try_whose_answer_was_lost_reports_an_estimate(mocker):
    lost = RateLimitError("gave up", status_code=429, charge=Charge(unconfirmed_tries=1))
    with_client(mocker, QwenChatOperator, answer("ok"), lost)
    first = QwenChatOperator(task_id="chat", prompt="hi", max_completion_tokens=100)
    run(first)
    op = QwenChatOperator(task_id="chat", prompt="hi", max_completion_tokens=100)
    with pytest.raises(RateLimitError):
        run(op)
    facet = facet_of(op.get_openlineage_facets_on_failure(None))
    assert facet["estimated"] is True  # a try that failed after it was sent: maybe paid
    assert facet["requests"] == 1
    assert facet["inferenceIds"] == []


def test_estimated_figures_and_other_tries_are_told_apart():
    this_try = {
        "model": "alibaba/qwen3.7-max",
        "requests": 2,
        "prompt_tokens": 30,
        "completion_tokens": 7,
        "total_tokens": 37,
        "credits_used": 90,
        "usd_spent": "0.000045",
        "estimated": True,
        "usd_unsettled": "0.01",
        "try_number": 2,
    }
    earlier = {**this_try, "requests": 3, "usd_spent": "0.5", "estimated": False, "usd_unsettled": "0"}
    both = CostRecord.combine(
        [CostRecord.from_xcom({**earlier, "try_number": 1}), CostRecord.from_xcom(this_try)],
        model="alibaba/qwen3.7-max",
        try_number=2,
    )
    facet = as_json(qwen_run_facet(both, ["inf-9"]))
    assert (facet["requests"], facet["usdSpent"], facet["estimated"], facet["tryNumber"]) == (
        2,
        "0.000045",
        True,
        2,
    )
    assert (facet["taskRequests"], facet["taskUsdSpent"], facet["taskEstimated"]) == (5, "0.500045", True)
    assert facet["usdUnsettled"] == "0.01"


def test_a_try_that_failed_before_it_was_metered_reports_zeros():
    op = QwenChatOperator(task_id="chat", prompt="hi", model="alibaba/qwen3.6-flash")
    facet = facet_of(op.get_openlineage_facets_on_failure(SimpleNamespace(try_number=3)))
    assert (facet["requests"], facet["usdSpent"], facet["estimated"], facet["tryNumber"]) == (
        0,
        "0",
        False,
        3,
    )
    assert facet["model"] == "alibaba/qwen3.6-flash"
    assert "taskRequests" not in facet  # earlier tries: not known here (null, left out of the JSON)
    assert "taskUsdSpent" not in facet
    templated = QwenChatOperator(task_id="t", prompt="hi", model="{{ params.model }}")
    assert "model" not in facet_of(templated.get_openlineage_facets_on_failure(None))


def test_inference_ids_are_capped_and_counted():
    facet = as_json(qwen_run_facet(record(requests=150), [f"inf-{n}" for n in range(150)]))
    assert len(facet["inferenceIds"]) == INFERENCE_IDS_IN_FACET
    assert facet["inferenceIdsNotListed"] == 150 - INFERENCE_IDS_IN_FACET


def test_past_the_ledgers_thousand_ids_the_rest_of_the_requests_are_counted():
    from airflow_provider_qwen.cost.ledger import INFERENCE_IDS_KEPT

    kept = [f"inf-{n}" for n in range(INFERENCE_IDS_KEPT)]
    facet = as_json(qwen_run_facet(record(requests=100_000), kept))
    assert len(facet["inferenceIds"]) == INFERENCE_IDS_IN_FACET
    assert facet["inferenceIdsNotListed"] == 100_000 - INFERENCE_IDS_IN_FACET


def test_a_server_sending_odd_or_secret_inference_ids_gets_none_of_them_listed():
    hostile = [
        KEY,  # the key echoed back as the id
        f"Bearer {KEY}",
        "x" * 10_000,  # a 10 KB header
        "id\nInjected: line",
        None,
        42,
        "ok-1",
    ]
    scrub = lineage_scrubber(KEY)
    facet = as_json(qwen_run_facet(record(requests=7), hostile, scrub=scrub))
    assert facet["inferenceIds"] == ["ok-1"]
    assert facet["inferenceIdsNotListed"] == 6
    assert KEY not in json.dumps(facet)


def lineage_scrubber(key: str):
    from airflow_provider_qwen.client.scrub import Scrubber

    return Scrubber(key)


def test_the_connections_key_is_cut_from_the_ids_of_a_real_try(mocker):
    with_client(mocker, QwenChatOperator, answer("hello"))
    op = QwenChatOperator(task_id="chat", prompt="hi")
    run(op)
    op.qwen_inference_ids = [KEY, "inf-1"]
    op.__dict__["hook"] = SimpleNamespace(_config=SimpleNamespace(api_key=KEY))  # the try's hook
    facet = facet_of(op.get_openlineage_facets_on_complete(None))
    assert facet["inferenceIds"] == ["inf-1"]
    assert facet["inferenceIdsNotListed"] == 1


def test_the_facet_text_goes_through_airflows_secrets_masker():
    """Airflow's redactor skips the fields a facet names in ``_additional_skip_redact``: the ids and the
    model must not be among them, so a secret the masker knows is cut there too."""
    from airflow.providers.openlineage.utils.utils import OpenLineageRedactor
    from airflow.sdk._shared.secrets_masker import SecretsMasker

    masker = SecretsMasker()
    masker.add_mask(KEY)
    facet = qwen_run_facet(record(model=f"m-{KEY}", requests=1), [KEY])  # no scrubber: only the masker
    redacted = OpenLineageRedactor.from_masker(masker).redact(facet, max_depth=20)
    text = Serde.to_json(redacted)
    assert KEY not in text
    assert "***" in text


def test_the_facet_pickles_and_is_importable_by_name():
    facet = qwen_run_facet(record(requests=1), ["inf-1"])
    assert pickle.loads(pickle.dumps(facet)) == facet
    assert type(facet) is lineage.QwenRunFacet
    assert unmetered_facet(None, None).requests == 0


def test_a_broken_part_costs_only_that_part(mocker, caplog):
    with_client(mocker, QwenChatOperator, answer("hello"))
    op = QwenChatOperator(task_id="chat", prompt="hi")
    run(op)
    mocker.patch.object(lineage, "lineage_datasets", side_effect=RuntimeError("boom"))
    assert facet_of(op.get_openlineage_facets_on_complete(None))["requests"] == 1
    op.qwen_cost_record = object()  # not a record at all
    mocker.patch.object(lineage, "lineage_datasets", return_value=([], []))
    assert op.get_openlineage_facets_on_complete(None).run_facets == {}
    assert "could not build the OpenLineage" in caplog.text


# -- datasets -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("/data/in.jsonl", ("file", "/data/in.jsonl")),
        ("file:///data/in.jsonl", ("file", "/data/in.jsonl")),
        ("file://localhost/data/in.jsonl", ("file", "/data/in.jsonl")),
        ("file:///data/docs/", ("file", "/data/docs")),
        ("file:///data/./in/../docs//a.jsonl", ("file", "/data/docs/a.jsonl")),
        ("/data/./in/../docs//a.jsonl", ("file", "/data/docs/a.jsonl")),
        ("s3://bucket/docs/in.parquet", ("s3://bucket", "docs/in.parquet")),
        ("s3://AKIAKEY:s3cr3t@bucket/docs/", ("s3://bucket", "docs")),
        ("s3://key:p@ss@word@bucket/x.csv", ("s3://bucket", "x.csv")),
        ("s3://my_conn@bucket/docs/*.txt", ("s3://bucket", "docs/*.txt")),
        ("s3://bucket/k.jsonl?X-Amz-Signature=abc&X-Amz-Credential=AKIA#frag", ("s3://bucket", "k.jsonl")),
        (
            "https://user:pw@files.example.com:8443/a.jsonl?token=t0k",
            ("https://files.example.com:8443", "a.jsonl"),
        ),
        ("hdfs://namenode:8020/data/in.csv", ("hdfs://namenode:8020", "data/in.csv")),
        ("gs://bucket", ("gs://bucket", "/")),
        ("gs://bucket/", ("gs://bucket", "/")),
        ("s3://bad host/x", None),
        ("s3:///no-bucket", None),
        ("{{ params.input }}", None),
        ("{% if x %}a{% endif %}", None),
        ("", None),
    ],
)
def test_dataset_names_follow_openlineage_and_drop_credentials(location, expected):
    assert dataset_name(location) == expected


def test_a_relative_results_path_is_named_by_its_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert dataset_name("out/results.jsonl") == ("file", str(tmp_path / "out" / "results.jsonl"))


def names(datasets) -> list[tuple[str, str]]:
    return [(d.namespace, d.name) for d in datasets]


def test_a_batch_over_files_names_its_input_and_results(tmp_path):
    source = tmp_path / "docs.jsonl"
    source.write_text('{"text": "a"}\n')
    op = QwenBatchOperator(
        task_id="batch",
        prompt="{{ item.text }}",
        items=f"file://{source}",
        results_path=str(tmp_path / "out.jsonl"),
    )
    for lineage_ in (op.get_openlineage_facets_on_start(), op.get_openlineage_facets_on_complete(None)):
        assert names(lineage_.inputs) == [("file", str(source))]
        assert names(lineage_.outputs) == [("file", str(tmp_path / "out.jsonl"))]
    assert op.get_openlineage_facets_on_start().run_facets == {}  # no figures before the run
    listed = QwenBatchOperator(task_id="listed", prompt="{{ item }}", items=["a", "b"])
    assert listed.get_openlineage_facets_on_complete(None).inputs == []
    assert listed.get_openlineage_facets_on_complete(None).outputs == []


def test_s3_inputs_shards_and_storage_paths(tmp_path):
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_qwen.batch import shard_input

    source = tmp_path / "docs.jsonl"
    source.write_text("".join(f'{{"text": "{n}"}}\n' for n in range(4)))
    shard = shard_input(f"file://{source}", 2)[1]
    cases = [
        (ObjectStoragePath("s3://aws_conn@bucket/in/docs.jsonl"), ("s3://bucket", "in/docs.jsonl")),
        ("s3://AKIA:secret@bucket/in/", ("s3://bucket", "in")),
        (shard, ("file", str(source))),
    ]
    for items, expected in cases:
        op = QwenBatchOperator(task_id="b", prompt="{{ item }}", items=["x"], results_path="s3://k:s@out/r/")
        op.items = items  # as rendered
        lineage_ = op.get_openlineage_facets_on_complete(None)
        assert names(lineage_.inputs) == [expected]
        assert names(lineage_.outputs) == [("s3://out", "r")]
        assert "secret" not in Serde.to_json(lineage_.inputs[0]) + Serde.to_json(lineage_.outputs[0])


@pytest.mark.parametrize(
    "items",
    [
        {"qwen_input": 1, "url": 123},  # a forged shard: no dataset named "123"
        {"qwen_input": 1},
        {"text": "an item dict, not a shard"},
        "relative/docs.jsonl",  # not an input to the batch either
        "{{ ti.xcom_pull('make') }}",
        42,
        None,
    ],
)
def test_what_is_not_an_input_names_no_dataset(items):
    op = QwenBatchOperator(task_id="b", prompt="{{ item }}", items=["x"])
    op.items = items
    assert op.get_openlineage_facets_on_complete(None).inputs == []


def test_a_decorated_batch_names_the_input_its_function_returned(mocker, tmp_path, monkeypatch):
    from airflow.sdk import DAG, task

    import airflow_provider_qwen.decorators  # noqa: F401 - registers @task.qwen_batch

    monkeypatch.setenv("AIRFLOW__QWEN__STORAGE_BASE", f"file://{tmp_path / 'qwen-storage'}")
    with_async_client(mocker)
    source = tmp_path / "docs.jsonl"
    source.write_text('{"text": "a"}\n')
    with DAG("lineage_decorated", schedule=None) as dag:

        @task.qwen_batch(
            prompt="{{ item.text }}", results_path=str(tmp_path / "out.jsonl"), progress_interval=60
        )
        def documents() -> str:
            return f"file://{source}"

        documents()
    op = dag.get_task("documents")
    assert op.get_openlineage_facets_on_start().inputs == []  # the function has not run yet
    _, ti = run(op, BatchTI())
    lineage_ = op.get_openlineage_facets_on_complete(ti)
    assert names(lineage_.inputs) == [("file", str(source))]
    assert names(lineage_.outputs) == [("file", str(tmp_path / "out.jsonl"))]
    assert facet_of(lineage_)["requests"] == 1


# -- through the OpenLineage provider -----------------------------------------------------------


def test_the_providers_extractor_uses_the_operators_methods(mocker):
    """What the listener does on SUCCESS and FAILED: the DefaultExtractor calls our methods."""
    from airflow.providers.openlineage.extractors.manager import ExtractorManager
    from airflow.utils.state import TaskInstanceState

    with_client(mocker, QwenChatOperator, answer("hello"))
    op = QwenChatOperator(task_id="chat", prompt="hi")
    _, ti = run(op)
    manager = ExtractorManager()
    dagrun = SimpleNamespace(run_id="manual__1")
    for state in (TaskInstanceState.SUCCESS, TaskInstanceState.FAILED):
        found = manager.extract_metadata(dagrun, op, state, ti)
        assert facet_of(found)["usdSpent"] == ti.pushed["qwen_cost"]["usd_spent"]
    started = manager.extract_metadata(dagrun, op, TaskInstanceState.RUNNING, ti)
    assert "qwen" not in started.run_facets


def test_an_event_written_by_the_file_transport(mocker, tmp_path, monkeypatch):
    """The provider's adapter (redaction included) and openlineage-python's file transport, as the
    deployment in tests/e2e is configured (``append``: one JSON line per event)."""
    from airflow.providers.openlineage.plugins.adapter import OpenLineageAdapter
    from airflow.sdk._shared.secrets_masker import SecretsMasker
    from openlineage.client import OpenLineageClient
    from openlineage.client.transport.file import FileConfig, FileTransport

    monkeypatch.setenv("AIRFLOW__QWEN__STORAGE_BASE", f"file://{tmp_path / 'qwen-storage'}")
    with_async_client(mocker)
    source = tmp_path / "docs.jsonl"
    source.write_text('{"text": "a"}\n{"text": "b"}\n')
    op = QwenBatchOperator(
        task_id="batch",
        prompt="{{ item.text }}",
        items=f"file://{source}",
        results_path=f"{tmp_path}/out.jsonl",
    )
    _, ti = run(op, ti=BatchTI())
    op.qwen_inference_ids = [*op.qwen_inference_ids, KEY]  # echoed by a server; no hook to cut it here
    out = tmp_path / "ol.jsonl"
    masker = SecretsMasker()
    masker.add_mask(KEY)
    client = OpenLineageClient(transport=FileTransport(FileConfig(log_file_path=str(out), append=True)))
    adapter = OpenLineageAdapter(client=client, secrets_masker=masker)
    common = dict(
        run_id="01890000-0000-7000-8000-000000000000",
        job_name="dag.batch",
        end_time="2026-12-02T00:00:00+00:00",
        nominal_start_time=None,
        nominal_end_time=None,
        owners=None,
        tags=None,
        job_description=None,
    )
    adapter.complete_task(task=op.get_openlineage_facets_on_complete(ti), **common)
    adapter.fail_task(task=op.get_openlineage_facets_on_failure(ti), error=RuntimeError("x"), **common)
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert [e["eventType"] for e in events] == ["COMPLETE", "FAIL"]
    for event in events:
        facet = event["run"]["facets"]["qwen"]
        assert facet.pop("inferenceIds") == ["inf-1", "inf-1", "***"]  # the echoed key: masked
        jsonschema.validate(facet, FACET_SCHEMA)
        assert facet["requests"] == 2
        assert facet["usdSpent"] == ti.pushed["qwen_cost"]["usd_spent"]
        assert names_of(event["inputs"]) == [("file", str(source))]
        assert names_of(event["outputs"]) == [("file", str(tmp_path / "out.jsonl"))]
    assert KEY not in out.read_text()


def names_of(datasets: list[dict]) -> list[tuple[str, str]]:
    return [(d["namespace"], d["name"]) for d in datasets]


def test_importing_the_operators_loads_no_openlineage():
    import subprocess
    import sys

    code = (
        "import sys, airflow_provider_qwen.operators as o, airflow_provider_qwen.operators.lineage\n"
        "o.QwenChatOperator, o.QwenBatchOperator\n"
        "ours = ('openlineage', 'airflow.providers.openlineage.')\n"
        "print(sorted(m for m in sys.modules if m.startswith(ours) and not m.endswith('.get_provider_info')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
