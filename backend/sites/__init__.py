"""Sites: each site's settings (time zone, wait targets, counters) from configuration (CONTRACT 10)."""
