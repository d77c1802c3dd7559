"""Relays: one module per upstream kind behind the protocol in `base`."""
