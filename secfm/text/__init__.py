"""Security text utilities: IOC extraction, defanging/refanging, text cleaning."""
