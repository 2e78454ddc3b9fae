"""Weather forecasts (Open-Meteo) per site and the PV forecast made from them (pvlib)."""
