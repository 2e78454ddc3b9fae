"""The contract between Nattery's parts (ARCHITECTURE §4 and §5): defined once, imported everywhere."""
