"""The simulator's admin endpoint (loopback only): read and switch faults while it runs.

    GET  /faults                    every system's faults
    POST /faults/<system>           a partial update, e.g. {"outage": true} or {"malformed": 0.2}
    POST /drift/<system>            change one record silently, now
    GET  /stats                     journeys, records, spool and command counts

A few routes on asyncio's stream server: the simulator needs no web framework for this.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import msgspec

from connectors.sim.faults import FaultPatch
from connectors.sim.run import Simulation

MAX_BODY = 4096


class AdminServer:
    def __init__(self, simulation: Simulation, port: int) -> None:
        self.simulation = simulation
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def route(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        parts = path.strip("/").split("/")
        systems = self.simulation.systems
        match method, parts:
            case "GET", ["faults"]:
                return 200, {name: system.faults for name, system in systems.items()}
            case "GET", ["stats"]:
                return 200, self.simulation.stats()
            case "POST", ["faults", name] if name in systems:
                try:
                    patch = msgspec.json.decode(body or b"{}", type=FaultPatch)
                except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                    return 422, {"error": str(exc)}
                patch.apply_to(systems[name].faults)
                return 200, systems[name].faults
            case "POST", ["drift", name] if name in systems:
                record = systems[name].drift_one()
                return 200, {"ref": record.ref if record else None}
            case _:
                return 404, {"error": f"no route {method} {path}"}

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = (await reader.readline()).decode("latin-1").split()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = min(int(value.strip() or 0), MAX_BODY)
            body = await reader.readexactly(length) if length else b""
            status, payload = (self.route(request_line[0], request_line[1], body) if len(request_line) >= 2
                               else (400, {"error": "bad request"}))
        except (ValueError, asyncio.IncompleteReadError):
            status, payload = 400, {"error": "bad request"}
        data = msgspec.json.encode(payload)
        writer.write(f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\nContent-Type:"
                     " application/json\r\n"
                     f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()
