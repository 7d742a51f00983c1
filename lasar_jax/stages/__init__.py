"""One module per stage of the chain; each exposes `run(config, workdir) -> summary dict`."""
