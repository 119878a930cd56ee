"""HTCondor file-transfer plugins (run inside job sandboxes, as executables).

They import nothing of htsec but this package, :mod:`htsec.errors`, :mod:`htsec._fs` and
:mod:`htsec._log` (an import-linter contract), and read tokens only from ``$_CONDOR_CREDS``.
"""

# Nothing is exported: each plugin is its own executable module (``htsec-plugin-*``).
__all__: list[str] = []
