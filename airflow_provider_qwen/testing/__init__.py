"""Test support shipped with the provider: an AI/ML API emulator and a pytest plugin.

``from airflow_provider_qwen.testing import QwenEmulator, Fault, Turn`` works; the server modules are
only imported on first use, so importing this package stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_qwen.testing.emulator import (
        Charge,
        ChargeRecord,
        Fault,
        LoggedRequest,
        QwenEmulator,
        Turn,
    )

__all__ = ["Charge", "ChargeRecord", "Fault", "LoggedRequest", "QwenEmulator", "Turn"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from airflow_provider_qwen.testing import emulator

        return getattr(emulator, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
