"""Text from the outside world made safe to print: one sanitizer for every terminal output.

A job's arguments, its process-group descriptions, host names, file names and any string read from
a capture, a trace or a saved report reach the terminal through :func:`printable` (or
:func:`printable_data` for a whole document): control characters — ESC sequences that would clear
the screen or forge a hyperlink, carriage returns that would overwrite a line, bidirectional
overrides — are shown as Python escapes (``\\x1b``, ``\\r``, ``\\u202e``), never sent.  Commands
commprof suggests are built by :func:`shell_command` (each word ``shlex.quote``'d, then made
printable), so pasting one runs what it says.
"""
from __future__ import annotations

import shlex
import unicodedata

# C0/C1 controls (Cc), format characters (Cf: bidi overrides, zero-width joiners), and the Unicode
# line/paragraph separators (Zl, Zp), which terminals and editors treat as line breaks.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


def _visible(ch: str) -> str:
    code = ord(ch)
    if ch == "\n":
        return "\\n"
    if ch == "\t":
        return "\\t"
    if ch == "\r":
        return "\\r"
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text, keep_newlines: bool = False) -> str:
    """``text`` (any value: ``str()`` of it) with every control or invisible formatting character
    replaced by its escape; printable text, spaces and non-ASCII letters are unchanged.
    ``keep_newlines``: ``\\n`` passes (text commprof itself laid out in lines)."""
    text = text if isinstance(text, str) else str(text)
    if text.isprintable():  # the common case: nothing to do (isprintable is False for "\n" too)
        return text
    return "".join(ch if (ch.isprintable() and unicodedata.category(ch) not in _UNSAFE_CATEGORIES)
                   or (keep_newlines and ch == "\n") else _visible(ch) for ch in text)


def printable_data(obj):
    """A copy of ``obj`` (dicts, lists, tuples, nested) with every string made :func:`printable`
    (keys included); other values are returned as they are."""
    if isinstance(obj, str):
        return printable(obj)
    if isinstance(obj, dict):
        return {printable_data(k): printable_data(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [printable_data(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(printable_data(v) for v in obj)
    return obj


def shell_command(words) -> str:
    """A command line to show the user: each word shell-quoted (``shlex.quote``), then printable —
    what is shown, pasted into a POSIX shell, runs exactly those words (when they hold no
    control characters; those are shown escaped, never sent to the terminal)."""
    return printable(" ".join(shlex.quote(str(w)) for w in words))
