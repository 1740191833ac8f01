"""HTTP service for appliances (needs the [serve] extra)."""
