"""What every step of the demo shares: who it is about, and how it speaks."""

from __future__ import annotations

#: who the walkthrough is about
USER, PROJECT = "ada@example.com", "chatbot"


def say(text: str) -> None:
    print(text, flush=True)
