"""Secure cloud burst to AWS (condor_annex's life cycle, with its known weaknesses fixed).

The admin side (:mod:`~htsec.annex.setup`, :mod:`~htsec.annex.create`,
:mod:`~htsec.annex.lease`) provisions and ends annexes with boto3; the instance side
(:mod:`~htsec.annex.bootstrap`) runs as root at boot, finds its annex through IMDSv2 and the
launch's client token, installs only its own configuration and firewalls the metadata service.
Nothing here touches the credential store: annex nodes authenticate with ID tokens handed in
by the caller (``htsec annex create`` mints them with :mod:`htsec.tokens`).
"""

from __future__ import annotations

from htsec.annex.names import annex_of_client_token, client_token, validate_name

__all__ = ["annex_of_client_token", "client_token", "validate_name"]
