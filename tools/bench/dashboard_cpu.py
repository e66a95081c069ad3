"""CPU of a running dashboard process with N browser tabs open on a page, in headless Debian chromium.

    python -m tools.bench.dashboard_cpu --url http://127.0.0.1:8080 --pid <dashboard pid> [--tabs 20]
        [--page /] [--role manager] [--backend-url http://127.0.0.1:8000]

The tabs share one signed-in browser session (demo mode, as `switchboard demo` runs it), like one
person's or one control room's screens; the figure is the dashboard process's own user+system
time over the window, from /proc, in cores. The baseline is the same process over a window of the same
length in the same run with no tab open. With `--backend-url`, the events the backend applied during
each window (its /metrics) prove the load was there. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import urllib.request

# a few renderer processes for all tabs: twenty would starve the dashboard being measured on a small machine
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--renderer-process-limit=4"]


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()  # noqa: SIM115 - one read of a proc file
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def events_applied(backend_url: str | None) -> float | None:
    """The backend's `switchboard_events_applied_total`, summed over its labels."""
    if backend_url is None:
        return None
    with urllib.request.urlopen(backend_url + "/metrics", timeout=5) as response:  # noqa: S310 - operator's URL
        lines = response.read().decode().splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines
               if line.startswith("switchboard_events_applied_total"))


async def window(pid: int, seconds: float, backend_url: str | None) -> tuple[float, float | None]:
    """The dashboard's cores over `seconds`, and the events the backend applied meanwhile."""
    applied, start_cpu, start = events_applied(backend_url), cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(seconds)
    cores = (cpu_seconds(pid) - start_cpu) / (time.monotonic() - start)
    after = events_applied(backend_url)
    return cores, None if applied is None or after is None else after - applied


async def measure(url: str, pid: int, tabs: int, page_path: str, warmup_s: float,
                  seconds: float, backend_url: str | None = None, role: str = "manager") -> dict[str, object]:
    from playwright.async_api import async_playwright  # noqa: PLC0415 - a test dependency, only for this tool

    baseline, baseline_events = await window(pid, seconds, backend_url)  # no tab open, same load
    print(f"  baseline without tabs: {baseline:.3f} cores", flush=True)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        context = await browser.new_context(viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(180_000)  # twenty tabs load slowly on a small shared machine
        first = await context.new_page()
        await first.goto(url + "/signin")
        await first.get_by_test_id("demo-role").click()
        await first.get_by_role("option", name=role, exact=True).click()
        await first.get_by_test_id("demo-enter").click()
        await first.get_by_test_id("who").wait_for()
        pages = [first] + [await context.new_page() for _ in range(tabs - 1)]
        for number, page in enumerate(pages, 1):
            await page.goto(url + page_path)
            await page.get_by_test_id("who").wait_for()
            print(f"  tab {number} open", flush=True)
        await asyncio.sleep(warmup_s)
        cores, events = await window(pid, seconds, backend_url)
        await browser.close()
    return {"tabs": tabs, "page": page_path, "role": role, "seconds": seconds, "cores": round(cores, 3),
            "baseline_cores": round(baseline, 3), "cores_per_tab": round((cores - baseline) / tabs, 4),
            "events_applied": events, "baseline_events_applied": baseline_events}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--pid", type=int, required=True, help="the dashboard process")
    parser.add_argument("--tabs", type=int, default=20)
    parser.add_argument("--page", default="/",
                        help="the page every tab shows (Flow by default)")
    parser.add_argument("--role", default="manager", help="the demo role the tabs sign in as (Audit: sre)")
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--backend-url", help="the backend whose applied events prove the load (/metrics)")
    args = parser.parse_args()
    result = asyncio.run(measure(args.url, args.pid, args.tabs, args.page, args.warmup, args.seconds,
                                 args.backend_url, args.role))
    print(f"dashboard CPU with {result['tabs']} tabs on {result['page']}: {result['cores']} cores"
          f" (without tabs {result['baseline_cores']}), events applied meanwhile: {result['events_applied']}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
