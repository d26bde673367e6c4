"""The store: the database and its adapters (SQLite, PostgreSQL), the SQL run per batch, the run ledger."""
