"""Alembic's entry point. `zupu.hub.db.migrate` hands it an open connection in `config.attributes`."""

from alembic import context

from zupu.hub.db import Base

connection = context.config.attributes["connection"]
# render_as_batch: SQLite cannot ALTER a column, so alembic rebuilds the table there (ALTER elsewhere).
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
