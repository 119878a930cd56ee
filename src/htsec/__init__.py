"""htsec: the security and credential plane of an HTCondor pool.

Parts (one sub-package each): :mod:`htsec.tokens` (IDTOKENS authority), :mod:`htsec.creds`
(the credential store and HTCondor's credential directory), :mod:`htsec.credmon` (refreshing
credentials, the local issuer), :mod:`htsec.store` (database), the web layer the routers share
(:mod:`htsec.web`), the app (:mod:`htsec.server`, run by :mod:`htsec.serve`) and the command
line (:mod:`htsec.cli`). Configuration is HTCondor's (:mod:`htsec.config`); every expected
error is an :class:`htsec.errors.HtsecError`. docs/architecture.md draws the layers and the tree.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
