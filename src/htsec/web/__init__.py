"""The web layer every router imports: problem documents (:mod:`.problems`), who is calling
and what they may do (:mod:`.auth`), bounds on what a request may hold (:mod:`.bounds`,
:mod:`.protocol`) and the cached token verifier (:mod:`.verifier`).

It sits beside :mod:`htsec.config` and :mod:`htsec.authz`, below every part: it imports the
base modules and the third-party web stack, never ``htsec.tokens``, ``htsec.creds`` or
``htsec.credmon`` (the verifier is handed to it through the app's state); only
:mod:`htsec.serve` imports :mod:`htsec.server`, which only composes the parts' routers.
``pyproject.toml``'s import-linter contracts hold it there.
"""

from __future__ import annotations

__all__: list[str] = []
