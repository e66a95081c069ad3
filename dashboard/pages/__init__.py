"""One module per page, each with `register(dashboard)` adding its route."""
