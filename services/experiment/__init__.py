"""ExperimentService: experiments, rounds, labels and round events over the other services."""
