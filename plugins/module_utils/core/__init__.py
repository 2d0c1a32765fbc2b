"""The shared vocabulary, defined once."""
