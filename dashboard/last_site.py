"""The site each person last chose on the board, so that a tablet opens where they work.

Kept by a pseudonym of the person (a keyed hash of the provider's issuer and subject), never the subject or
anything else about them, in one small file in the data folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
from pathlib import Path


def pseudonym(key: bytes, issuer: str, subject: str) -> str:
    return hmac.new(key, f"{issuer}\0{subject}".encode(), hashlib.sha256).hexdigest()[:32]


class LastSites:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._sites: dict[str, str] = {}
        with contextlib.suppress(OSError, ValueError):
            loaded = json.loads(path.read_text(encoding="utf-8"))
            self._sites = {k: v for k, v in loaded.items() if isinstance(k, str) and isinstance(v, str)}

    def get(self, person: str) -> str | None:
        return self._sites.get(person)

    def remember(self, person: str, site: str) -> None:
        if self._sites.get(person) == site:
            return
        self._sites[person] = site
        draft = self.path.with_suffix(".tmp")
        draft.write_text(json.dumps(self._sites), encoding="utf-8")
        os.replace(draft, self.path)  # whole or not at all
