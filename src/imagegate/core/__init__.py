"""What every layer shares: errors, ids, the clock, image formats and checks, staging
files, base64 decoding, TOML files and secret files. Imports nothing else of imagegate."""
