"""The one base class of the plugin's user-facing errors.

Every error a user can act on (a bad file, a missing extra, an endpoint that refuses, a run that cannot
start) is an `MTBenchError` whose message is one line naming what to fix; the plugin shows it as such,
never as a traceback. Each module defines its own subclass where it raises it (BackendError, DataError,
PromptError, ...), so callers catch exactly what they can handle, or `MTBenchError` for all of them.
"""

from __future__ import annotations


class MTBenchError(Exception):
    """A failure the user can act on, shown as its one-line message."""
