"""LFS object sizes as 64-bit integers (PostgreSQL's INTEGER stops at 2 GiB); token names up to 128 characters
(the default name `<user>-write` of a 96-character user did not fit).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("repo_objects") as batch:
        batch.alter_column("size", existing_type=sa.Integer(), type_=sa.BigInteger(), existing_nullable=False)
    with op.batch_alter_table("tokens") as batch:
        batch.alter_column("name", existing_type=sa.String(length=96), type_=sa.String(length=128),
                           existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        batch.alter_column("name", existing_type=sa.String(length=128), type_=sa.String(length=96),
                           existing_nullable=False)
    with op.batch_alter_table("repo_objects") as batch:
        batch.alter_column("size", existing_type=sa.BigInteger(), type_=sa.Integer(), existing_nullable=False)
