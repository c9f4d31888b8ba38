"""The edge's routes, one module per endpoint family."""
