"""Alembic migrations, run by ``switchboard db upgrade`` (and by ``switchboard up``).

The Alembic config is built in code, so the migrations ship inside the package and work from
an installed wheel as well as from a clone.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from shared.settings import get_settings


def alembic_config(database_url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent))
    config.set_main_option("sqlalchemy.url",
                           (database_url or get_settings().effective_database_url)
                           .replace("%", "%%"))
    return config


def upgrade(database_url: str | None = None, revision: str = "head") -> None:
    url = database_url or get_settings().effective_database_url
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(url), revision)
