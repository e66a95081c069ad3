"""Retention: a purge that keeps stored data bounded (background job and `switchboard purge`)."""
