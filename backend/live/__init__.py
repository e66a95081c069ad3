"""Live updates: the `/api/v1/live` websocket (CONTRACT section 7) and its fan-out across replicas.

Protocol, as the client sees it:
- `{"op": "subscribe", "topics": [...], "sites": [...]}` (sites optional: every site the token
  allows). Each topic answers `{"op": "snapshot", "topic", "seq", "epoch", "data": [...]}`, then
  `{"op": "update", "topic", "seq", "site", "key", "data"}` as things change; `seq` grows by one
  per update of the topic on this replica, and `key` names what changed (a journey id, a site, a
  failure id): a client keeps the latest `data` per key.
- To resume, subscribe again (same topics and sites) with `"last_seq": {topic: seq}` and the
  `"epoch"` of the snapshot: the updates missed since (latest per key) follow, or a fresh snapshot
  when they are no longer all in the history (or the epoch is another replica's).
- `{"op": "unsubscribe", "topics": [...]}`; `{"op": "ping"}` answers `{"op": "pong"}`; a
  malformed message answers `{"op": "error", "reason"}` and changes nothing.
- Close codes: 4401 token expired, 4429 too many messages, 1009 message too big, 4008 too slow.

Every domain announces through the backend's one `LiveBus` (`resources.live`, backend/live/bus.py): in
the transaction that makes a change, `async with bus.after_commit(conn) as announce: ...
announce(topic, site, key, data)`, sent once it has committed; `await bus.publish(...)` for a change
already committed.
"""
