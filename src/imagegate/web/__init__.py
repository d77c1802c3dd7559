"""HTTP outside MCP: signed downloads, health and readiness, 401 explanations."""
