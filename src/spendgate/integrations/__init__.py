"""Drop-in integrations: each module imports its framework, so import the one
you use (``spendgate.integrations.litellm``, ``spendgate.integrations.asgi``);
``import spendgate`` imports none of them."""

from __future__ import annotations
