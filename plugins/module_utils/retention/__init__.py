"""Retention: which backups and oplog slices of a backup root to keep (policy, plan) and ageing out the rest (apply)."""
