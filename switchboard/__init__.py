"""Switchboard: live operational state of customer journeys across the systems that own them."""
