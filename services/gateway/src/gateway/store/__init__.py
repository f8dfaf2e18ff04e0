"""The user store: the `Store` contract (`contract`), SQLite (`sqlite`, default) and PostgreSQL (`postgres`).

`open_store(settings, metrics)` picks the engine: `DATABASE_URL` set → PostgreSQL, else SQLite at
`GATEWAY_DB_PATH`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.store.contract import (
    BUDGET_PERIODS,
    DEMO_KEY_FILE,
    DEMO_USER_ID,
    KEY_COLUMNS,
    MICROS_PER_CREDIT,
    AliasInUse,
    ApiKey,
    BudgetPeriod,
    Hold,
    KeyRecord,
    KeyRefused,
    ModelUsage,
    Store,
    StoreConfigurationError,
    StoreUnavailable,
    User,
    generate_key,
    hash_key,
    to_credits,
    to_micros,
    write_demo_key,
)
from gateway.store.metrics import StoreMetrics
from gateway.store.sqlite import FLUSH_SECONDS, SqliteStore, UserStore

if TYPE_CHECKING:
    from gateway.settings import GatewaySettings

__all__ = [
    "BUDGET_PERIODS",
    "DEMO_KEY_FILE",
    "DEMO_USER_ID",
    "FLUSH_SECONDS",
    "KEY_COLUMNS",
    "MICROS_PER_CREDIT",
    "AliasInUse",
    "ApiKey",
    "BudgetPeriod",
    "Hold",
    "KeyRecord",
    "KeyRefused",
    "ModelUsage",
    "SqliteStore",
    "Store",
    "StoreConfigurationError",
    "StoreMetrics",
    "StoreUnavailable",
    "User",
    "UserStore",
    "generate_key",
    "hash_key",
    "open_store",
    "to_credits",
    "to_micros",
    "write_demo_key",
]


async def open_store(settings: GatewaySettings, metrics: StoreMetrics) -> Store:
    """The engine the settings name, connected and migrated."""
    if settings.database_url is None:
        return SqliteStore.open(settings.gateway_db_path, metrics)
    from gateway.store.postgres import PostgresStore  # noqa: PLC0415 - asyncpg only when it is used

    return await PostgresStore.open(
        settings.database_url,
        metrics,
        pool_size=settings.gateway_db_pool_size,
        hold_seconds=settings.gateway_hold_seconds,
        timeout=settings.gateway_db_timeout_seconds,
        wait_seconds=settings.gateway_db_connect_seconds,
        synchronous_commit=settings.gateway_db_synchronous_commit,
    )
