"""The Switchboard backend: Litestar app, JetStream consumer, journey state in Postgres."""
