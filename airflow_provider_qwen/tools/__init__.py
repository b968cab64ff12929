"""Built-in agent tools for pipelines: SQL over an Airflow connection (read-only enforced), an
upstream task's XCom, and files on object storage. Each returns bounded text to the model.

Airflow is imported only when a tool runs, so a DAG file that builds these tools stays light.
"""

from airflow_provider_qwen.tools._common import ToolRefusedError
from airflow_provider_qwen.tools.object_storage import object_storage_tool
from airflow_provider_qwen.tools.sql import sql_tool
from airflow_provider_qwen.tools.sql_guard import ReadOnlyViolation, check_read_only
from airflow_provider_qwen.tools.xcom import xcom_tool

__all__ = [
    "ReadOnlyViolation",
    "ToolRefusedError",
    "check_read_only",
    "object_storage_tool",
    "sql_tool",
    "xcom_tool",
]
