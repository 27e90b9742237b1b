"""Bundled weight files of keras_learned_opt (data only; see index.json)."""
