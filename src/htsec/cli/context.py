"""What a command works on, handed to it through click's context (``ctx.obj``).

:class:`App` holds the ``--debug`` flag and opens the configuration, the IDTOKENS authority,
the credential store and the HTTP client on first use, each once per invocation. The
credential store is opened by :func:`htsec.creds.open.open_credstore`, as ``htsec serve``
and the credmon open it. Commands take it with ``@pass_app``; options shared by the commands
that talk to a server (``--server``, ``--token-file``) are here too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import click

from htsec.config import Settings, load

if TYPE_CHECKING:
    from htsec.client import Client
    from htsec.creds.store import CredStore
    from htsec.tokens.authority import Authority

__all__ = ["CONTEXT", "App", "pass_app", "server_option", "token_file_option"]

#: click settings for every group and command (``-h`` is ``--help``; help wraps at 100).
CONTEXT: dict[str, Any] = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@dataclass
class App:
    """One ``htsec`` invocation: the flags of the main group and what commands open lazily
    (the heavy modules are imported only by the commands that need them)."""

    debug: bool = False
    _settings: Settings | None = field(default=None, repr=False)
    _authority: Authority | None = field(default=None, repr=False)
    _credstore: CredStore | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        """The configuration (a :class:`htsec.errors.ConfigError` names what is wrong)."""
        if self._settings is None:
            self._settings = load()
        return self._settings

    @property
    def authority(self) -> Authority:
        """The IDTOKENS authority: signing keys, the database, the token registry."""
        if self._authority is None:
            from htsec.tokens.authority import Authority

            self._authority = Authority(self.settings)
        return self._authority

    @property
    def credstore(self) -> CredStore:
        """The credential store, on the authority's database (one connection pool)."""
        if self._credstore is None:
            from htsec.creds.open import open_credstore

            self._credstore = open_credstore(self.settings, self.authority.store)
        return self._credstore

    def client(self, server: str | None, token_file: str | None) -> Client:
        """An HTTP client of the htsec server at ``server`` (default ``HTSEC_SERVER_URL``),
        authenticating with ``token_file`` (default: the token directory)."""
        from htsec.client import Client

        return Client(self.settings, url=server, token_file=token_file)

    @staticmethod
    def caller_name() -> str:
        """Who runs this command, for audit records (``user@host``)."""
        from htsec.tokens.authority import caller_name

        return caller_name()


#: Hands the invocation's :class:`App` to a command as its first argument.
pass_app = click.make_pass_decorator(App)

server_option = click.option(
    "--server",
    metavar="URL",
    help="htsec server (default HTSEC_SERVER_URL, https://127.0.0.1:9680).",
)
token_file_option = click.option(
    "--token-file",
    metavar="FILE",
    help="Authenticate with this token instead of the token directory.",
)
