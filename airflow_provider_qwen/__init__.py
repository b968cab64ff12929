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

# The project's addresses (the same in setup.cfg's project_urls, README.md and mkdocs.yml). Airflow
# 3.3's providers manager sets the provider info's documentation-url from the distribution's
# "Project-URL: Documentation" (what `airflow providers get --full` and the providers page show);
# the info names the same address itself, for the readers of the info that come before that step.
SOURCE_URL = "https://github.com/airflow-provider-qwen/airflow-provider-qwen"
DOCUMENTATION_URL = "https://airflow-provider-qwen.github.io/airflow-provider-qwen/"

# Every module that defines an operator (helpers and mixins are left out), hook and trigger.
OPERATOR_MODULES = [
    f"airflow_provider_qwen.operators.{name}"
    for name in ("chat", "tool_call", "batch", "agent", "cost_report")
]
HOOK_MODULES = ["airflow_provider_qwen.hooks.qwen"]
TRIGGER_MODULES = ["airflow_provider_qwen.triggers.qwen"]
TASK_DECORATORS = ("qwen", "qwen_tool_call", "qwen_batch", "qwen_agent")

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
        "description": (
            "Alibaba Qwen models on the AI/ML API: hook, operators, TaskFlow decorators, deferrable "
            "calls, batches, agents, cost tracking and budgets."
        ),
        "versions": [__version__],
        "documentation-url": DOCUMENTATION_URL,
        "connection-types": [
            {
                "connection-type": "qwen",
                "hook-class-name": "airflow_provider_qwen.hooks.qwen.QwenHook",
                "hook-name": "Qwen (AI/ML API)",
                "conn-fields": CONN_FIELDS,
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
            }
        ],
        "hooks": [{"integration-name": "Qwen", "python-modules": list(HOOK_MODULES)}],
        "operators": [{"integration-name": "Qwen", "python-modules": list(OPERATOR_MODULES)}],
        "triggers": [{"integration-name": "Qwen", "python-modules": list(TRIGGER_MODULES)}],
        "task-decorators": [
            {"name": name, "class-name": f"airflow_provider_qwen.decorators.qwen.{name}_task"}
            for name in TASK_DECORATORS
        ],
        "config": {
            "qwen": {
                "description": (
                    "Where Qwen tasks keep batch checkpoints, large outputs and cost journals; how "
                    "long a deferred call holds its event."
                ),
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
                    "resume_guard_seconds": {
                        "description": (
                            "A deferred call's event is handed back no sooner than this many seconds "
                            "after the task deferred (default 10; 0: at once). Airflow 3.3 fails a "
                            "task whose trigger fires before the scheduler saw it defer."
                        ),
                        "version_added": "0.1.0",
                        "type": "float",
                        "example": "10",
                        "default": None,
                    },
                },
            }
        },
        "integrations": [
            {
                "integration-name": "Qwen",
                "external-doc-url": "https://docs.aimlapi.com/",
                "tags": ["ai", "alibaba", "llm"],
            }
        ],
    }
