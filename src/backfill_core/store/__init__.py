"""The store: opening the database, the SQL run per batch, and the run ledger."""
