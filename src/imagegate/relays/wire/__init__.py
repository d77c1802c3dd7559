"""How relays talk to upstreams: HTTP with timeouts and retries, error classification,
SSE parsing, JSON bodies that stream image files, fetching image URLs."""
