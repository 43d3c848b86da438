"""Models served by the example model server; see models/fraud/README.md."""
