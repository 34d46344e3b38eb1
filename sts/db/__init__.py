"""Storage: typed SQLAlchemy 2.0 models, engine/session setup, and every query in queries.py."""
