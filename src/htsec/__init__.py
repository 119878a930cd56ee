"""htsec: the security and credential plane of an HTCondor pool.

Parts (one sub-package each): :mod:`htsec.tokens` (IDTOKENS authority), :mod:`htsec.store`
(database), and the command line in :mod:`htsec.cli`. Configuration is HTCondor's
(:mod:`htsec.config`); every expected error is an :class:`htsec.errors.HtsecError`.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
