"""Secrets out of every message we print or show: Hub tokens, ``Authorization`` headers, URL credentials.

:func:`redact` replaces, in any text:

- the exact values of secrets it is given, in every form a person may have pasted them (as given, and stripped of
  surrounding whitespace: a token pasted with a trailing newline is pushed stripped, and must not leak either way);
- the Hub token of this environment (``HF_TOKEN`` / ``HUGGING_FACE_HUB_TOKEN`` / huggingface_hub's stored token);
- anything shaped like a Hub token (``hf_`` + 30 or more letters and digits), ``Bearer ...`` credentials and the
  password of a ``scheme://user:password@host`` URL.

Example:
    >>> redact("401 for hf_abcdefghijklmnopqrstuvwxyzABCDEF at https://me:pw@example.org/x")
    '401 for [redacted] at https://me:[redacted]@example.org/x'
    >>> redact("token 's3cret' refused", secrets=["s3cret\\n"])  # pasted with a newline, used stripped
    "token '[redacted]' refused"
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable

__all__ = ["REDACTED", "one_line", "redact"]

REDACTED = "[redacted]"
_TOKEN_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_API_TOKEN")
_PATTERNS = (
    (re.compile(r"hf_[A-Za-z0-9]{30,}"), REDACTED),
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"), rf"\1{REDACTED}"),
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]+:)[^/\s@]+(@)"), rf"\1{REDACTED}\2"),
)
_MIN_SECRET = 4  # shorter "secrets" would redact ordinary words


def _environment_secrets() -> list[str]:
    found = [os.environ.get(name, "") for name in _TOKEN_ENV]
    if "huggingface_hub" in sys.modules:  # the stored token, only where the Hub client is in use anyway
        try:
            from huggingface_hub import get_token

            found.append(get_token() or "")
        except Exception:  # redaction must never raise while another error is being reported
            pass
    return found


def redact(text: object, secrets: Iterable[str | None] = ()) -> str:
    """``str(text)`` with every secret replaced by ``[redacted]`` (see the module docstring).

    Args:
        text: A message, an exception, anything with a ``str``.
        secrets: Extra secret values (e.g. a token typed into a form), redacted as given and stripped.
    """
    out = str(text)
    values = {v for s in [*secrets, *_environment_secrets()] if s for v in (s, s.strip()) if len(v) >= _MIN_SECRET}
    for value in sorted(values, key=len, reverse=True):  # longest first: "tok\n" before "tok"
        out = out.replace(value, REDACTED)
    for pattern, replacement in _PATTERNS:
        out = pattern.sub(replacement, out)
    return out


def one_line(error: object, limit: int = 2000) -> str:
    """A message on one line (whitespace runs collapsed), cut at ``limit`` characters.

    Example:
        >>> one_line(ValueError("expected X,\\n  got Y"))
        'expected X, got Y'
    """
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
