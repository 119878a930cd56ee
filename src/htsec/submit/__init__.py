"""The submit gate: what a submit description needs, as condor_submit decides it.

- :mod:`~htsec.submit.macros`: loops and blow-ups in macros, refused before HTCondor expands
- :mod:`~htsec.submit.load`: ``htcondor2.Submit`` with bounds; queue statements and jobs
- :mod:`~htsec.submit.needs`: the OAuth tokens needed (``OAuthServicesNeeded``, scopes,
  audience, local issuers)

The credd's answer to "are they stored?" is the route ``POST /v1/creds/check``
(:mod:`htsec.creds.check`); ``htsec submit`` (:mod:`htsec.cli.submit`) puts them together.
Nothing is imported here, so that importing one module does not load htcondor2.
"""

__all__: list[str] = []
