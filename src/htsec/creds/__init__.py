"""Credentials: HTCondor's OAuth credential directory and htsec's store of what it holds.

The directory is the contract with HTCondor's credd, schedd, shadow, starter and credmons
(shared/FORMATS.md section 3); htsec writes it from its store and imports existing ones.

- :mod:`~htsec.creds.names`: credential names (``TokenName``, ``local_user``), no filesystem
- :mod:`~htsec.creds.files`: the ``.top``/``.use``/``.meta`` formats
- :mod:`~htsec.creds.pending`: pending web logins (ClassAd files)
- :mod:`~htsec.creds.creddir`: :class:`~htsec.creds.creddir.CredDir`, the directory on disk
- :mod:`~htsec.creds.safety`: safe reads and the root's and user directories' checks
- :mod:`~htsec.creds.scan` and :mod:`~htsec.creds.importer`: importing an existing directory
- :mod:`~htsec.creds.store`, :mod:`~htsec.creds.crypto`: the encrypted store; how a put
  becomes rows (:mod:`~htsec.creds.writes`), its audit trail (:mod:`~htsec.creds.audit`), the
  one way to open it (:mod:`~htsec.creds.open`)
- :mod:`~htsec.creds.api`, :mod:`~htsec.creds.fastpath`: the credd's HTTP routes

Nothing is imported here, so that importing one of them (the store imports only the names)
does not load the rest.
"""

__all__: list[str] = []
