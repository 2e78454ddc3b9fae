"""Market prices (Octopus Agile, ENTSO-E day-ahead) and GB imbalance (Elexon, Modo)."""
