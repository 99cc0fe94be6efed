"""Persistence: metadata through SQLAlchemy (SQLite by default) and blobs in a data folder."""
