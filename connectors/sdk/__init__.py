"""The connector SDK: subclass `Connector`, run it with `ConnectorRuntime`."""

from connectors.sdk.connector import OK, Connector, Outcome, Unavailable
from connectors.sdk.runtime import ConnectorRuntime

__all__ = ["OK", "Connector", "ConnectorRuntime", "Outcome", "Unavailable"]
