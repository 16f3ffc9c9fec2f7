"""Persistence: SQLModel tables, repositories, the SQL unit of work and Alembic migrations.

The only package that imports SQLAlchemy.
"""
