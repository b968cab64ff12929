"""OpenLineage facets of the operators: the ``qwen`` run facet from the try's cost, and the datasets of
a batch over files."""

from __future__ import annotations

import json

import pytest
from openlineage.client.serde import Serde

from airflow_provider_qwen.client.errors import Charge, StreamError
from airflow_provider_qwen.operators import QwenBatchOperator, QwenChatOperator
from airflow_provider_qwen.operators.lineage import INFERENCE_IDS_IN_FACET, dataset_name, qwen_run_facet
from tests.support.operator_fakes import answer, run, with_client


def _facet(lineage):
    return json.loads(Serde.to_json(lineage.run_facets["qwen"]))


def test_a_chat_reports_its_model_tokens_cost_and_inference_id(mocker):
    with_client(mocker, QwenChatOperator, answer("hello"))
    op = QwenChatOperator(task_id="chat", prompt="hi")
    _, ti = run(op)
    facet = _facet(op.get_openlineage_facets_on_complete(ti))
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
    assert facet["inferenceIds"] == ["inf-1"]
    assert facet["_schemaURL"].endswith("docs/lineage.md#the-qwen-run-facet")
    assert "airflow-provider-qwen" in facet["_producer"]


def test_a_failed_try_still_reports_what_it_spent(mocker):
    cut = StreamError("cut after the answer began", charge=Charge(partial=answer("half an ans")))
    with_client(mocker, QwenChatOperator, cut)
    op = QwenChatOperator(task_id="chat", prompt="hi")
    with pytest.raises(StreamError):
        run(op)
    facet = _facet(op.get_openlineage_facets_on_failure(None))
    assert facet["requests"] == 1  # the cut answer was paid for
    assert facet["usdSpent"] == "0.001"


def test_a_try_that_failed_before_metering_has_no_facet():
    op = QwenChatOperator(task_id="chat", prompt="hi")
    assert op.get_openlineage_facets_on_failure(None).run_facets == {}


def test_inference_ids_are_capped_and_counted():
    from airflow_provider_qwen.cost.record import CostRecord

    record = CostRecord.from_xcom({"model": "m", "requests": 150, "try_number": 1})
    facet = json.loads(Serde.to_json(qwen_run_facet(record, [f"inf-{n}" for n in range(150)])))
    assert len(facet["inferenceIds"]) == INFERENCE_IDS_IN_FACET
    assert facet["inferenceIdsNotListed"] == 150 - INFERENCE_IDS_IN_FACET


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("/data/in.jsonl", ("file", "/data/in.jsonl")),
        ("file:///data/in.jsonl", ("file", "/data/in.jsonl")),
        ("s3://bucket/docs/in.parquet", ("s3://bucket", "docs/in.parquet")),
        ("s3://AKIAKEY:s3cr3t@bucket/docs/", ("s3://bucket", "docs/")),
        ("s3://my_conn@bucket/docs/*.txt", ("s3://bucket", "docs/*.txt")),
        ("gs://bucket", ("gs://bucket", "/")),
        ("{{ params.input }}", None),
    ],
)
def test_dataset_names_follow_openlineage_and_drop_credentials(location, expected):
    assert dataset_name(location) == expected


def test_a_batch_over_files_names_its_input_and_results(mocker, tmp_path):
    source = tmp_path / "docs.jsonl"
    source.write_text('{"text": "a"}\n')
    op = QwenBatchOperator(
        task_id="batch",
        prompt="{{ item.text }}",
        items=f"file://{source}",
        results_path=str(tmp_path / "out.jsonl"),
    )
    lineage = op.get_openlineage_facets_on_complete(None)
    assert [(d.namespace, d.name) for d in lineage.inputs] == [("file", str(source))]
    assert [(d.namespace, d.name) for d in lineage.outputs] == [("file", str(tmp_path / "out.jsonl"))]
    listed = QwenBatchOperator(task_id="listed", prompt="{{ item }}", items=["a", "b"])
    assert listed.get_openlineage_facets_on_complete(None).inputs == []
