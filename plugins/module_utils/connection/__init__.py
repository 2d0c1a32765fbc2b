"""Reaching the server: client options, TLS, redaction, server facts and replica-set member choice."""
