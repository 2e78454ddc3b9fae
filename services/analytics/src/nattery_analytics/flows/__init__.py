"""Energy flows: hourly rollups per device (PV, load, grid, battery) and their API."""
