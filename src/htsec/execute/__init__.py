"""The local execution point: runs accepted jobs on this machine, as an HTCondor starter does.

:mod:`~htsec.execute.description` expands a submit description into procs,
:mod:`~htsec.execute.records` keeps them in the store, :mod:`~htsec.execute.runner` runs them
(:mod:`~htsec.execute.stage` moves files, :mod:`~htsec.execute.transfer` runs the file-transfer
plugins, :mod:`~htsec.execute.process` starts and kills processes, :mod:`~htsec.execute.asuser`
touches the owner's files as the owner, :mod:`~htsec.execute.sandbox` the job's,
:mod:`~htsec.execute.creds` delivers tokens), :mod:`~htsec.execute.api` is the jobs API and
:mod:`~htsec.execute.point` puts it together.
"""

__all__: list[str] = []
