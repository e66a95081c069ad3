"""A tiny real connector for tests: receives commands over NATS and answers with `command.result` events."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Self

import msgspec
import nats
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from switchboard.commands import Command
from tests.support.events import cloud_event, publish

Answer = Callable[[Command], str | None]  # "ok", "failed", "unavailable", or None for no answer


class ConnectorDouble:
    """Plays the connector of `system` for the commands of one `site` (tests share the servers)."""

    def __init__(self, nc: nats.NATS, system: str, site: str, answer: Answer) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.system = system
        self.site = site
        self.answer = answer
        self.received: list[Command] = []
        self._subscription: Subscription | None = None

    async def __aenter__(self) -> Self:
        self._subscription = await self.nc.subscribe(f"svc.commands.{self.system}.>", cb=self._on_command)
        await self.nc.flush()  # the server knows of the subscription before any command is sent
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._subscription is not None:
            await self._subscription.unsubscribe()

    async def _on_command(self, msg: Msg) -> None:
        command = msgspec.json.decode(msg.data, type=Command)
        if command.site != self.site:
            return
        self.received.append(command)
        status = self.answer(command)
        if status is not None:
            data = {"command_id": str(command.id), "status": status}
            if status != "ok":
                data["error"] = "upstream said no"
            await publish(self.js, cloud_event("command.result", f"{self.system}:cmd-{command.id}", data))


def heartbeat(system: str, connector: str, upstream: str, *,
              age: timedelta = timedelta()) -> dict[str, object]:
    return cloud_event("connector.heartbeat", f"connector:{connector}",
                       {"upstream": upstream, "version": "1.0"},
                       source=f"/{system}", time=datetime.now(UTC) - age)
