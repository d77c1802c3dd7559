"""Real backing services (S3, PostgreSQL, load balancers) started inside the test session."""
