"""One module per fixture component: ``run(fixture) -> list[Comparison]``."""
