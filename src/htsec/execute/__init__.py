"""The local execution point: runs accepted jobs on this machine, as an HTCondor starter does."""

__all__: list[str] = []
