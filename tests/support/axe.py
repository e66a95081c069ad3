"""axe-core, the accessibility rule engine, fetched from the npm registry by `npm pack` (never committed)
and run inside a page the browser tests have open."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path
from typing import Any

from playwright.async_api import Page

# pinned, so a new release's rules never turn the suite red on their own
AXE_CORE = "axe-core@4.10.3"
# what the board must never have; moderate and minor findings are reported but do not fail
BLOCKING_IMPACTS = frozenset({"serious", "critical"})


def fetch_axe(folder: Path) -> str:
    """axe.min.js of the pinned release, packed from the registry into `folder` (once per folder)."""
    script = folder / "axe.min.js"
    if not script.exists():
        folder.mkdir(parents=True, exist_ok=True)
        packed = subprocess.run(["npm", "pack", AXE_CORE, "--silent", "--pack-destination", str(folder)],
                                check=True, capture_output=True, text=True, timeout=120).stdout.strip()
        with tarfile.open(folder / packed.splitlines()[-1]) as archive:
            member = archive.extractfile("package/axe.min.js")
            assert member is not None, f"{AXE_CORE} has no axe.min.js"
            script.write_bytes(member.read())
    return script.read_text(encoding="utf-8")


async def violations(page: Page, axe_source: str) -> list[dict[str, Any]]:
    """Every rule the page as it is now breaks, with the impact, the rule and the elements."""
    if not await page.evaluate("typeof window.axe !== 'undefined'"):
        await page.add_script_tag(content=axe_source)
    result = await page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    return [{"impact": v["impact"], "rule": v["id"], "help": v["help"],
             "elements": [" ".join(n["target"]) + ": " + n.get("failureSummary", "")[:200]
                          for n in v["nodes"]]}
            for v in result["violations"]]


def blocking(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [v for v in found if v["impact"] in BLOCKING_IMPACTS]
