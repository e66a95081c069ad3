"""Validation costs time linear in a message's size (CONTRACT section 9): adversarial events of every
shape, at the 64 KB limit, through `validate()` directly, through HTTP ingest and through NATS on a real
backend, and the live websocket's client messages. Before the personal-data patterns were rewritten one
60 KB event of letters took 6.4 s on the event loop. Four times the size must cost about four times the CPU
time, not sixteen: a ratio measured within one run, not a speed; the tests through a backend bound only
what a client waits, far above what a request takes."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Callable
from typing import Any

import httpx
import msgspec
import nats.js.errors
import pytest

from backend.ingest.validate import validate
from backend.live.session import _decoder as live_decoder
from switchboard.events import RESERVED_SYSTEMS, SEED_SYSTEMS
from tests.support.events import cloud_event, publish
from tests.support.waits import eventually

LIMIT = 64 * 1024
SYSTEMS = SEED_SYSTEMS | RESERVED_SYSTEMS


def _nested(depth: int, leaf: Any) -> Any:
    for level in range(depth):
        leaf = {f"k{level}": leaf, "pad": "a" * 40}
    return leaf


# each shape: a builder of the unknown field's value from a size in characters
SHAPES: dict[str, Callable[[int], Any]] = {
    "letters": lambda n: "a" * n,
    "digits": lambda n: "1" * n,
    "at signs": lambda n: "@" * n,
    "letter-at pairs": lambda n: "a@" * (n // 2),
    "dots": lambda n: "." * n,
    "letter-dot pairs": lambda n: "a." * (n // 2),
    "pluses": lambda n: "+" * n,
    "plus-digit runs": lambda n: "+1 " * (n // 3),
    "digit-letter alternation": lambda n: "1a" * (n // 2),
    "nine digits then a letter": lambda n: ("1" * 9 + "a") * (n // 10),
    "almost an address": lambda n: "a@b." * (n // 4),
    "long local part before @": lambda n: "a" * (n - 8) + "@b.c",
    "dash-digit runs": lambda n: "1-" * (n // 2),
    "dates and serials": lambda n: "800101-" * (n // 7),
    "unicode letters": lambda n: "é" * (n // 2),
    "unicode digits": lambda n: "٣" * (n // 2),
    "title-cased words": lambda n: "Ab." * (n // 3),
    "deep nesting": lambda n: _nested(28, "a" * (n - 28 * 60)),  # as deep as MAX_DEPTH allows
    "many keys": lambda n: {f"key{i}": "a" for i in range(n // 15)},
    "many tiny strings": lambda n: ["a@"] * (n // 5),
    "long key": lambda n: {"a" * (n - 10): 1},
}


def adversarial(shape: str, size: int, uid: str = "x", site: str = "north") -> bytes:
    """A valid `customer.arrived` with one unknown field of `shape`, `size` bytes in all (about)."""
    event = cloud_event("customer.arrived", f"queue:T-{uid}", {"site": site, "x": None}, source="/queue")
    overhead = len(msgspec.json.encode(event))
    event["data"]["x"] = SHAPES[shape](max(size - overhead - 64, 16))
    body = msgspec.json.encode(event)
    assert len(body) <= LIMIT, (shape, len(body))
    return body


def _fastest(work: Callable[[], object], runs: int = 9) -> float:
    """The least CPU time of `runs` runs, this process's own: other processes on the machine do not count."""
    best = float("inf")
    for _ in range(runs):
        started = time.process_time()
        work()
        best = min(best, time.process_time() - started)
    return best


def _grows_linearly(name: str, big: Callable[[], object], small: Callable[[], object]) -> None:
    """Four times the input costs about four times the time (measured 2.6 to 4.3), not sixteen: a ratio
    within one run, not a speed. Timings below 2 ms are mostly fixed cost and the clock's grain."""
    big_s, small_s = _fastest(big), _fastest(small)
    assert big_s < 0.002 or big_s / small_s < 10, f"{name}: {small_s * 1e3:.2f} ms → {big_s * 1e3:.2f} ms"


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_an_adversarial_event_validates_in_linear_time(shape):
    big, small = adversarial(shape, LIMIT - 512), adversarial(shape, (LIMIT - 512) // 4)
    _grows_linearly(shape, lambda: validate(big, max_bytes=LIMIT, known_systems=SYSTEMS),
                    lambda: validate(small, max_bytes=LIMIT, known_systems=SYSTEMS))


def test_a_live_client_message_decodes_in_linear_time():
    """The websocket's inbound messages are one typed decode: a hostile subscribe is refused, in time linear
    in its size."""
    def refused(size: int) -> Callable[[], object]:
        hostile = msgspec.json.encode({"op": "subscribe", "topics": ["flow"], "sites": ["a" * size]})

        def decode() -> object:
            with pytest.raises(msgspec.ValidationError):
                live_decoder.decode(hostile)
            return None
        return decode

    _grows_linearly("subscribe", refused(60_000), refused(15_000))


async def test_http_ingest_answers_an_adversarial_batch_promptly(api: httpx.AsyncClient, token, uid):
    connector = {"Authorization": f"Bearer {token('connector', system='queue')}"}
    site = f"lin-{uid}"
    for shape in ("letters", "letter-at pairs", "deep nesting", "many tiny strings"):
        body = adversarial(shape, LIMIT - 512, uid=f"{uid}-{len(shape)}", site=site)
        started = time.perf_counter()
        answer = await api.post("/api/v1/events", content=body, headers={**connector,
                                                                         "Content-Type": "application/json"})
        took = time.perf_counter() - started
        assert answer.status_code == 202, answer.text
        assert len(answer.json()["accepted"]) + len(answer.json()["rejected"]) == 1
        assert took < 1.0, f"{shape}: {took:.2f}s"  # a request, a publish and the answer; was 6.4 s


async def test_an_adversarial_stream_over_nats_does_not_hold_up_the_api(
        api: httpx.AsyncClient, js, token, uid):
    """Forty 64 KB adversarial events on NATS: each is applied (its unknown field dropped) while the API
    keeps answering, and no request waits behind them for long."""
    site = f"lin-{uid}"
    manager = {"Authorization": f"Bearer {token('manager', [site])}"}
    shapes = ["letters", "letter-at pairs", "digit-letter alternation", "almost an address"]
    bodies = [adversarial(shapes[n % len(shapes)], LIMIT - 512, uid=f"{uid}-{n}", site=site)
              for n in range(40)]
    await asyncio.gather(*(publish(js, msgspec.json.decode(body)) for body in bodies))
    slowest = 0.0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        started = time.perf_counter()
        page = await api.get("/api/v1/journeys", params={"site": site, "limit": 100}, headers=manager)
        slowest = max(slowest, time.perf_counter() - started)
        if len(page.json()["items"]) == len(bodies):
            break
        await asyncio.sleep(0.05)
    assert len(page.json()["items"]) == len(bodies)
    assert slowest < 1.0, f"a request waited {slowest:.2f}s behind validation"


async def _slowest_answer_while(api: httpx.AsyncClient, headers: dict[str, str], site: str,
                                busy: asyncio.Future[Any], until: Callable[[], Any]) -> float:
    """The slowest of the API's answers, asked every 20 ms while `busy` runs and until `until()` holds."""
    slowest = 0.0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        started = time.perf_counter()
        await api.get("/api/v1/journeys", params={"site": site, "limit": 1}, headers=headers)
        slowest = max(slowest, time.perf_counter() - started)
        if busy.done() and await until():
            return slowest
        await asyncio.sleep(0.02)
    raise AssertionError("the work did not end within 60 s")


async def test_a_batch_of_large_events_over_http_does_not_hold_up_the_api(api: httpx.AsyncClient, token, uid):
    """A hundred 64 KB events of the costliest shape in one request: seconds of validation, done a slice at a
    time, so that other requests (and the apply worker, and the websockets) are answered meanwhile."""
    site = f"lin-{uid}"
    bodies = [adversarial("many tiny strings", LIMIT - 512, uid=f"{uid}-{n}", site=site) for n in range(100)]
    connector = {"Authorization": f"Bearer {token('connector', system='queue')}",
                 "Content-Type": "application/json"}
    posted = asyncio.create_task(api.post("/api/v1/events", content=b"[" + b",".join(bodies) + b"]",
                                          headers=connector, timeout=30))
    manager = {"Authorization": f"Bearer {token('manager', [site])}"}

    async def answered() -> bool:
        return True

    slowest = await _slowest_answer_while(api, manager, site, posted, answered)
    answer = posted.result()
    assert answer.status_code == 202 and len(answer.json()["accepted"]) == len(bodies), answer.text[:500]
    assert slowest < 1.0, f"a request waited {slowest:.2f}s behind the batch's validation"


async def test_messages_past_the_size_limit_over_nats_do_not_hold_up_the_api(
        api: httpx.AsyncClient, js, pool, token, uid):
    """Messages of NATS's own limit (1 MB), sixteen times the event limit: refused unread (a scan for
    personal data took a quarter second each, ten of them in one run of the event loop) and erased from
    the stream, since nobody read what they hold."""
    site = f"lin-{uid}"
    body = b'{"data": {"site": "' + site.encode() + b'"}, "x": "' + b"800101-" * 140_000 + b'"}'
    manager = {"Authorization": f"Bearer {token('manager', [site])}"}

    async def publish_all() -> list[Any]:
        return await asyncio.gather(*(js.publish("svc.events.queue.customer.arrived", body)
                                      for _ in range(10)))

    published = asyncio.create_task(publish_all())

    async def all_refused() -> bool:  # unread, so at no site: found by the hash of what was refused
        return await pool.fetchval("SELECT count(*) FROM failures WHERE payload->>'sha256' = $1",
                                   hashlib.sha256(body).hexdigest()) == 10

    slowest = await _slowest_answer_while(api, manager, site, published, all_refused)
    assert slowest < 1.0, f"a request waited {slowest:.2f}s behind validation"

    async def all_erased() -> bool:
        for ack in published.result():
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.get_msg(ack.stream, ack.seq)
                return False
        return True

    assert await eventually(all_erased)
