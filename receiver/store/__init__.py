"""The store: one database holding the registry, the journal and each output's delivery state.

SQLite is the embedded engine (``receiver/store/sqlite.py``); PostgreSQL will be its sibling.
SQLite-only SQL stays inside the SQLite backend.
"""
