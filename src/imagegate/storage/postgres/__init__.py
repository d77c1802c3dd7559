"""The shared database: PostgreSQL, for several processes or machines at once."""
