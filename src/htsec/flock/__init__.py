"""Secure flocking: the shepherd policy daemon and the isolation of flocking slots (issue 15)."""
