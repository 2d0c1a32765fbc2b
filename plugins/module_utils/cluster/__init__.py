"""Cluster procedures: fsync lock, balancer, sharded-cluster backup and restore at one cluster time."""
