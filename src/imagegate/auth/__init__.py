"""Authentication: who is calling, as a Subject."""
