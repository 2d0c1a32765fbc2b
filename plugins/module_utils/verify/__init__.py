"""Verification by test restore: restore into a scratch server, compare with what the backup says it holds."""
