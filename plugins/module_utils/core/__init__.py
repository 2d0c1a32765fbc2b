"""The shared vocabulary, defined once: namespaces, timestamps, server-version rules, locks, worker pools."""
