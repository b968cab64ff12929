"""QwenHook: an Airflow ``qwen`` connection turned into a configured QwenClient / AsyncQwenClient.

The DAG processor imports this module, so it stays light: httpx, pydantic models and the client are
imported inside the methods that need them.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from airflow_provider_qwen import CONN_FIELDS, DEFAULT_CONN_ID, UI_FIELD_BEHAVIOUR
from airflow_provider_qwen.hooks.connection import CONN_TYPE, EXTRA_NAMES, QwenConnectionConfig

if TYPE_CHECKING:
    from datetime import datetime

    from airflow_provider_qwen.client.client import AsyncChatStream, AsyncQwenClient, ChatStream, QwenClient
    from airflow_provider_qwen.client.models import ChatCompletion
    from airflow_provider_qwen.client.pricing import PriceTable
    from airflow_provider_qwen.cost.reconcile import Reconciliation

TEST_CONNECTION_TIMEOUT = 30.0


def _mask(secret: str) -> None:
    """Register the key with Airflow's secrets masker, so task logs show *** instead."""
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:  # Airflow 3.0
        from airflow.sdk.execution_time.secrets_masker import mask_secret  # type: ignore[no-redef]
    mask_secret(secret)


async def _amask(secret: str) -> None:
    try:
        from airflow.sdk.log import amask_secret
    except ImportError:  # Airflow < 3.2 has only the sync form
        _mask(secret)
        return
    await amask_secret(secret)


class QwenHook(BaseHook):
    """Calls Qwen models on the AI/ML API through an Airflow connection of type ``qwen``.

    Connection fields:

    - password: the AI/ML API key. Registered with Airflow's secrets masker; never in a repr,
      a log line or an exception message.
    - host: the base URL, default ``https://api.aimlapi.com/v1``. A full URL (``http://127.0.0.1:8000/v1``,
      as JSON ``AIRFLOW_CONN_QWEN_DEFAULT`` gives it) is used as is, plus ``port`` if it has none.
      A bare host name (as a URI like ``qwen://:KEY@api.aimlapi.com/https`` gives it) is completed
      from the other parts: ``schema`` ``http``/``https`` is the URL scheme and any other ``schema``
      is the path; without them the scheme is ``https`` (``http`` for a loopback host) and the path ``/v1``.
      So ``qwen://:KEY@api.aimlapi.com`` and ``qwen://:KEY@api.aimlapi.com/https`` both mean
      ``https://api.aimlapi.com/v1``, and ``qwen://:KEY@127.0.0.1:8000/v1`` means ``http://127.0.0.1:8000/v1``.
    - extras (JSON object, or URI query parameters): ``model`` (default model id), ``timeout``
      (read timeout, seconds), ``max_retries`` (0-10), ``prices`` (USD per 1M tokens by model id,
      a JSON string or object, over the shipped table). Invalid values raise ValueError naming the field.

    :param qwen_conn_id: the connection id (default ``qwen_default``).
    """

    conn_name_attr = "qwen_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = CONN_TYPE
    hook_name = "Qwen (AI/ML API)"

    def __init__(self, qwen_conn_id: str = DEFAULT_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.qwen_conn_id = qwen_conn_id
        self._config: QwenConnectionConfig | None = None
        self._prices: PriceTable | None = None
        self._client: QwenClient | None = None
        self._async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncQwenClient] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(qwen_conn_id={self.qwen_conn_id!r})"

    # -- connection form (Airflow 3.0/3.1; 3.2+ reads conn-fields from get_provider_info) -------------

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Extra fields of the connection form on Airflow 3.0/3.1 (empty where wtforms is absent)."""
        try:
            from flask_appbuilder.fieldwidgets import BS3TextAreaFieldWidget, BS3TextFieldWidget
            from flask_babel import lazy_gettext
            from wtforms import IntegerField, StringField
            from wtforms.validators import Optional
        except ImportError:  # Airflow >= 3.2 without FAB: the declarative conn-fields are used instead
            return {}

        def text(name: str, widget: Any = None) -> Any:
            spec = CONN_FIELDS[name]
            default = spec["schema"].get("default")
            if isinstance(default, float):
                default = f"{default:g}"  # a text field's default is text
            return StringField(
                lazy_gettext(spec["label"]),
                widget=widget or BS3TextFieldWidget(),
                description=spec["description"],
                default=default,
                validators=[Optional()],
            )

        retries = CONN_FIELDS["max_retries"]
        return {
            "model": text("model"),
            "timeout": text("timeout"),
            "max_retries": IntegerField(
                lazy_gettext(retries["label"]),
                widget=BS3TextFieldWidget(),
                description=retries["description"],
                default=retries["schema"]["default"],
                validators=[Optional()],
            ),
            "prices": text("prices", BS3TextAreaFieldWidget()),
        }

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Hidden, relabelled and placeholder fields of the form on Airflow 3.0/3.1."""
        return {
            "hidden_fields": list(UI_FIELD_BEHAVIOUR["hidden-fields"]),
            "relabeling": dict(UI_FIELD_BEHAVIOUR["relabeling"]),
            "placeholders": dict(UI_FIELD_BEHAVIOUR["placeholders"]),
        }

    # -- configuration ---------------------------------------------------------------------------------

    @property
    def config(self) -> QwenConnectionConfig:
        """The parsed connection, read once (the key is masked in logs from here on)."""
        if self._config is None:
            with self._lock:
                if self._config is None:
                    conn = self.get_connection(self.qwen_conn_id)
                    config = QwenConnectionConfig.from_connection(conn)
                    if config.api_key:
                        _mask(config.api_key)
                    self._set_config(config)
        assert self._config is not None
        return self._config

    async def aconfig(self) -> QwenConnectionConfig:
        """``config`` for async code: reads the connection without blocking the event loop."""
        if self._config is None:
            aget = getattr(self, "aget_connection", None)
            conn = await aget(self.qwen_conn_id) if aget else self.get_connection(self.qwen_conn_id)
            config = QwenConnectionConfig.from_connection(conn)
            if config.api_key:
                await _amask(config.api_key)
            with self._lock:
                if self._config is None:
                    self._set_config(config)
        return self.config

    def _set_config(self, config: QwenConnectionConfig) -> None:
        if config.ignored_extras:
            self.log.warning(
                "Connection %r has extras this hook does not use: %s (known: %s)",
                config.conn_id,
                ", ".join(config.ignored_extras),
                ", ".join(EXTRA_NAMES),
            )
        self._config = config

    @property
    def default_model(self) -> str:
        return self.config.model

    @property
    def base_url(self) -> str:
        return self.config.base_url

    @property
    def timeout(self) -> float:
        return self.config.timeout

    @property
    def max_retries(self) -> int:
        return self.config.max_retries

    @property
    def prices(self) -> PriceTable:
        """Prices for estimates: shipped table, connection overrides, and a live refresh if one was made."""
        if self._prices is None:
            self._prices = self.config.prices
        return self._prices

    @prices.setter
    def prices(self, table: PriceTable) -> None:
        with self._lock:
            self._prices = table
            for client in [self._client, *self._async_clients.values()]:
                if client is not None:
                    client.prices = table

    # -- clients ---------------------------------------------------------------------------------------

    def _client_kwargs(self, config: QwenConnectionConfig) -> dict[str, Any]:
        return {
            "api_key": config.api_key,
            "base_url": config.base_url,
            "model": config.model,
            "timeout": config.timeout,
            "max_retries": config.max_retries,
            "prices": self.prices,
        }

    def get_conn(self) -> QwenClient:
        """The hook's QwenClient, created once and shared (httpx clients are thread-safe)."""
        if self._client is None:
            from airflow_provider_qwen.client.client import QwenClient

            config = self.config
            with self._lock:
                if self._client is None:
                    self.log.info(
                        "Qwen client for %s (model %s, timeout %ss, %d retries)",
                        config.base_url,
                        config.model,
                        config.timeout,
                        config.max_retries,
                    )
                    self._client = QwenClient(**self._client_kwargs(config))
        return self._client

    @asynccontextmanager
    async def async_client(self, **overrides: Any) -> AsyncIterator[AsyncQwenClient]:
        """A new AsyncQwenClient of this connection, closed when the block ends; ``overrides`` are
        constructor arguments (a batch's own retry policy or pool size)."""
        from airflow_provider_qwen.client.client import AsyncQwenClient

        config = await self.aconfig()
        client = AsyncQwenClient(**{**self._client_kwargs(config), **overrides})
        try:
            yield client
        finally:
            await client.aclose()

    def _loop_client(self) -> AsyncQwenClient:
        """The client ``achat``/``astream`` share on the running loop (connections are loop-bound);
        ``aclose()`` closes it."""
        from airflow_provider_qwen.client.client import AsyncQwenClient

        config = self.config
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._async_clients.get(loop)
            if client is None:
                client = AsyncQwenClient(**self._client_kwargs(config))
                self._async_clients[loop] = client
        return client

    def close(self) -> None:
        """Close the sync client; async clients are closed by ``aclose()`` on their own loop."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        """Close the async client of the running loop."""
        with self._lock:
            client = self._async_clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    # -- calls -----------------------------------------------------------------------------------------

    def chat(
        self, messages: str | Sequence[Mapping[str, Any]], *, model: str | None = None, **params: Any
    ) -> ChatCompletion:
        """One chat completion; parameters are validated before anything is sent."""
        return self.get_conn().chat(messages, model=model, **params)

    async def achat(
        self, messages: str | Sequence[Mapping[str, Any]], *, model: str | None = None, **params: Any
    ) -> ChatCompletion:
        """``chat`` awaited, on the loop's shared async client."""
        await self.aconfig()  # read the connection without blocking the loop
        return await self._loop_client().chat(messages, model=model, **params)

    def stream(
        self, messages: str | Sequence[Mapping[str, Any]], *, model: str | None = None, **params: Any
    ) -> ChatStream:
        """A streamed completion: iterate the chunks, then read ``.completion``."""
        return self.get_conn().stream(messages, model=model, **params)

    def astream(
        self, messages: str | Sequence[Mapping[str, Any]], *, model: str | None = None, **params: Any
    ) -> AsyncChatStream:
        """``stream`` for async code (called on the running loop): ``async with`` / ``async for``."""
        return self._loop_client().stream(messages, model=model, **params)

    def test_connection(self) -> tuple[bool, str]:
        """Check the key with the unbilled balance call; never raises, never runs a completion."""
        try:
            config = self.config
        except Exception as exc:
            return False, f"Connection {self.qwen_conn_id!r} cannot be used: {exc}"
        if not config.api_key:
            return False, f"Connection {config.conn_id!r} has no API key: set it in the password field."
        from airflow_provider_qwen.client.errors import AuthenticationError

        try:
            from airflow_provider_qwen.client.client import QwenClient

            kwargs = self._client_kwargs(config)
            kwargs.update(timeout=min(config.timeout, TEST_CONNECTION_TIMEOUT), max_retries=0)
            with QwenClient(**kwargs) as client:
                balance = client.get_balance()
        except AuthenticationError:
            return False, f"The API key was refused by {config.base_url} (HTTP 401): check the key."
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}".replace(config.api_key, "***")
            return False, f"Cannot reach the AI/ML API at {config.base_url}: {reason}"
        amount = balance.get("current_balance") if isinstance(balance, Mapping) else None
        currency = balance.get("currency", "USD") if isinstance(balance, Mapping) else "USD"
        return True, f"Connected to {config.base_url}: balance {amount} {currency}."

    def refresh_prices(self) -> PriceTable:
        """Fetch the live price table: it replaces the shipped prices; the connection's overrides
        (negotiated prices, models the service does not list) still win."""
        from airflow_provider_qwen.client.pricing import PriceTable

        live = self.get_conn().fetch_prices()
        table = PriceTable().with_overrides(live.as_dict()).with_overrides(self.config.price_overrides)
        self.prices = table
        return table

    def reconcile(
        self,
        records: Sequence[Mapping[str, Any]],
        *,
        since: datetime,
        until: datetime | None = None,
        ledger: bool = True,
    ) -> Reconciliation:
        """``qwen_cost`` records with their estimates replaced by the service's own figures.

        Reads ``GET /v2/logs`` once per window of at most 92 days over ``since`` .. ``until``
        (default now), which must cover the records' calls: a call without a row there was never
        billed. With ``ledger``, the figures of the rows found come from the account ledger
        (``/v2/billing/transactions`` since ``since``). Nothing is read when nothing is estimated.
        See docs/cost.md, "Reconciliation".
        """
        from datetime import datetime, timezone

        from airflow_provider_qwen.client.records import RecordsClient
        from airflow_provider_qwen.cost.reconcile import (
            estimate_entries,
            inference_ids_to_price,
            reconcile_records,
        )

        if not estimate_entries(records):
            return reconcile_records(records, [], covered=False)
        config = self.config
        end = until or datetime.now(timezone.utc)
        with RecordsClient(config.api_key, base_url=config.base_url, timeout=config.timeout) as client:
            rows = client.logs(since, end)
            charges = None
            if ledger and inference_ids_to_price(records, rows):
                charges = client.transactions(since, None, direction="CHARGE", type="MODEL_USAGE")
        result = reconcile_records(records, rows, ledger=charges, covered=True)
        self.log.info("%s", result.report.summary())
        return result
