"""The Switchboard dashboard: a NiceGUI process that talks to the backend over HTTP and the live websocket."""
