"""CPU of a running dashboard process with N browser tabs open on a page, in headless Debian chromium.

    python -m tools.bench.dashboard_cpu --url http://127.0.0.1:8080 --pid <dashboard pid> [--tabs 20]

The tabs share one signed-in browser session (demo mode, as `switchboard demo` runs it), like one
person's or one control room's screens; the figure is the dashboard process's own user+system
time over the window, from /proc, in cores. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

# a few renderer processes for all tabs: twenty would starve the dashboard being measured on a small machine
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--renderer-process-limit=4"]


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()  # noqa: SIM115 - one read of a proc file
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


async def measure(url: str, pid: int, tabs: int, page_path: str, warmup_s: float,
                  seconds: float) -> dict[str, float | str]:
    from playwright.async_api import async_playwright  # noqa: PLC0415 - a test dependency, only for this tool

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        context = await browser.new_context(viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(180_000)  # twenty tabs load slowly on a small shared machine
        first = await context.new_page()
        await first.goto(url + "/signin")
        await first.get_by_test_id("demo-enter").click()
        await first.get_by_test_id("who").wait_for()
        pages = [first] + [await context.new_page() for _ in range(tabs - 1)]
        for number, page in enumerate(pages, 1):
            await page.goto(url + page_path)
            await page.get_by_test_id("who").wait_for()
            print(f"  tab {number} open", flush=True)
        await asyncio.sleep(warmup_s)
        start_cpu, start = cpu_seconds(pid), time.monotonic()
        await asyncio.sleep(seconds)
        cores = (cpu_seconds(pid) - start_cpu) / (time.monotonic() - start)
        await browser.close()
    return {"tabs": tabs, "page": page_path, "seconds": seconds, "cores": round(cores, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--pid", type=int, required=True, help="the dashboard process")
    parser.add_argument("--tabs", type=int, default=20)
    parser.add_argument("--page", default="/",
                        help="the page every tab shows (Flow, the busiest, by default)")
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    result = asyncio.run(measure(args.url, args.pid, args.tabs, args.page, args.warmup, args.seconds))
    print(f"dashboard CPU with {result['tabs']} tabs on {result['page']}: {result['cores']:.2f} cores")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
