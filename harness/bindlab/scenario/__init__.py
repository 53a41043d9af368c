"""Scenario files: the model (:mod:`.model`), the TOML loader (:mod:`.load`), the runner
(:mod:`.run`) and pytest collection (:mod:`.collect`)."""
