"""Logical backup and restore: the native dump and restore engines and the real mongodump runner."""
