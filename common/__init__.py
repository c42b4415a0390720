"""Small utilities every package shares, importing nothing of the project: the base of the clear-message errors
(:mod:`common.errors`) and atomic file replacement (:mod:`common.atomic`)."""
