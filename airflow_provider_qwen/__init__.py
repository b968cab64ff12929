"""Apache Airflow provider for Alibaba Qwen models on the AI/ML API.

This module is read by Airflow's providers manager in every process: it imports nothing heavy.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

DEFAULT_CONN_ID = "qwen_default"
DEFAULT_BASE_URL = "https://api.aimlapi.com/v1"
DEFAULT_MODEL = "alibaba/qwen3.7-max"
DEFAULT_TIMEOUT = 600.0
DEFAULT_MAX_RETRIES = 2

CONN_FIELDS: dict[str, dict[str, Any]] = {
    "model": {
        "label": "Default model",
        "description": "Model id used when a task names none.",
        "schema": {"type": "string", "default": DEFAULT_MODEL},
    },
    "timeout": {
        "label": "Timeout (seconds)",
        "description": "Read timeout of one request; connect timeout is 5 s.",
        "schema": {"type": "number", "default": DEFAULT_TIMEOUT, "minimum": 1},
    },
    "max_retries": {
        "label": "Max retries",
        "description": "Retries of 408/409/429/5xx and connection errors, with backoff.",
        "schema": {"type": "integer", "default": DEFAULT_MAX_RETRIES, "minimum": 0, "maximum": 10},
    },
    "prices": {
        "label": "Price overrides (JSON)",
        "description": 'USD per 1M tokens, e.g. {"alibaba/qwen3.7-max": {"input": 2.6, "output": 7.8}}.',
        "schema": {"type": ["string", "null"]},
    },
}

UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["schema", "port", "login", "extra"],
    "relabeling": {"password": "API key", "host": "Base URL"},
    "placeholders": {
        "host": DEFAULT_BASE_URL,
        "password": "Your AI/ML API key (aimlapi.com)",
    },
}


def get_provider_info() -> dict[str, Any]:
    """Provider metadata read by Airflow's providers manager (``apache_airflow_provider`` entry point)."""
    return {
        "package-name": "airflow-provider-qwen",
        "name": "Qwen (AI/ML API)",
        "description": "Alibaba Qwen models on the AI/ML API: hook, operators, cost tracking.",
        "versions": [__version__],
        "connection-types": [
            {
                "connection-type": "qwen",
                "hook-class-name": "airflow_provider_qwen.hooks.qwen.QwenHook",
                "hook-name": "Qwen (AI/ML API)",
                "conn-fields": CONN_FIELDS,
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
            }
        ],
        "hooks": [{"integration-name": "Qwen", "python-modules": ["airflow_provider_qwen.hooks.qwen"]}],
        "operators": [{"integration-name": "Qwen", "python-modules": ["airflow_provider_qwen.operators"]}],
        "triggers": [{"integration-name": "Qwen", "python-modules": ["airflow_provider_qwen.triggers.qwen"]}],
        "task-decorators": [
            {"name": name, "class-name": f"airflow_provider_qwen.decorators.qwen.{name}_task"}
            for name in ("qwen", "qwen_tool_call", "qwen_batch", "qwen_agent")
        ],
        "config": {
            "qwen": {
                "description": "Where Qwen tasks keep batch checkpoints, large outputs, cost journals.",
                "options": {
                    "storage_base": {
                        "description": "ObjectStoragePath URL all workers share (default: a local folder).",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "s3://my-bucket/qwen",
                        "default": None,
                    },
                    "storage_conn_id": {
                        "description": "Connection used to reach storage_base (e.g. an aws connection).",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "aws_default",
                        "default": None,
                    },
                },
            }
        },
        "integrations": [
            {
                "integration-name": "Qwen",
                "external-doc-url": "https://docs.aimlapi.com/",
                "tags": ["ai"],
            }
        ],
    }
