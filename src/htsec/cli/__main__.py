"""``python -m htsec.cli``: the ``htsec`` command without its console script."""

from htsec.cli import main

main()
