"""Secure flocking: the shepherd policy daemon and the isolation of flocking slots (issue 15)."""

__all__: list[str] = []
