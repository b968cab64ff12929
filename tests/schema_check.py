"""Kept for older test imports: the request validator lives in ``airflow_provider_qwen.testing.schema``."""

from airflow_provider_qwen.testing.schema import assert_valid_request, request_errors  # noqa: F401
