"""The PostgreSQL store (psycopg 3): the engine for several receiver nodes on one database.

``PostgresStore`` implements ``receiver.store.interface.Store``; its numbered migrations are
``migrations/NNNN_name.sql``, its own (the SQLite backend keeps its own).
"""
