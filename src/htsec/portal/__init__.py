"""The OAuth portal: authorisation links, device login (RFC 8628) and the dashboard."""

from __future__ import annotations

__all__: list[str] = []
