"""Airflow hooks of the Qwen provider (import ``airflow_provider_qwen.hooks.qwen.QwenHook``)."""
