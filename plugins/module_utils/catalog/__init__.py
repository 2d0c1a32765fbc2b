"""The backup catalog: what a backup root holds, point-in-time restore plans and their reports."""
