"""The pages a denied navigation gets where no redirect fits: plain HTML, no script, and nothing
of the request in them (no token, no address, no path)."""

from __future__ import annotations

HTML = "text/html; charset=utf-8"


def _page(title: str, text: str) -> bytes:
    """One line (nginx carries it in a header), so no newline."""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width"><title>{title}</title></head>'
            f"<body><h1>{title}</h1><p>{text}</p></body></html>").encode("ascii")


#: A claim the page needs is missing and no redirect is set for it.
FORBIDDEN = _page("Access denied", "You are signed in, but your account may not open this page.")
#: No signing key or core can be reached: the session cannot be checked now.
UNAVAILABLE = _page("Please try again in a moment",
                    "Your sign-in cannot be checked right now. Reload this page in a few seconds.")
