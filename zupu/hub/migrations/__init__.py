"""Alembic migrations of the hub's database; `zupu.hub.db.connect` runs them (no alembic.ini needed)."""
