"""The deployable services of the suite, one package each."""
