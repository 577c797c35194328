"""One experiment for every front-end: reference ladders by id, the protocol, features, probe, aggregation."""
