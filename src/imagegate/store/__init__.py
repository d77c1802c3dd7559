"""Asset storage (blobs + metadata) and signed download links."""
