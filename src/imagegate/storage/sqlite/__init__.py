"""The embedded database: the asset index and the quota ledger in one SQLite file."""
