"""The base class of the errors whose message tells the user what is wrong and how to fix it.

Each program catches :class:`UserError` once, prints the message (no traceback) and exits 2. Any other exception
is a bug or an unexpected failure and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input (a file, option, checkpoint or device); the message names it and says what to do."""
