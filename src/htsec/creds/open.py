"""The one way to open the credential store of a configuration.

``htsec serve``/``credd`` (through :func:`htsec.server.create_app`), the credmon and the
command line all call :func:`open_credstore`, so they agree on the database and on the data
key file, and the key file is created (0600) the same way on first use. It lives in the creds
layer because that is the lowest layer that can build a :class:`CredStore` and the highest one
the credmon may import.
"""

from __future__ import annotations

from htsec.config import Settings
from htsec.creds.crypto import Sealer, generate_key_file
from htsec.creds.store import CredStore
from htsec.store import Store, open_store

__all__ = ["open_credstore"]


def open_credstore(settings: Settings, store: Store | None = None) -> CredStore:
    """The credential store of ``settings``: its database (``store`` when the caller has it
    open already, e.g. the IDTOKENS authority's, else opened and migrated from
    ``HTSEC_DATABASE_URL``) sealed with the keys of ``HTSEC_STORE_KEY_FILE`` (created if
    missing)."""
    generate_key_file(settings.store_key_file)
    return CredStore(
        store if store is not None else open_store(settings.database_url),
        Sealer(settings.store_key_file),
    )
