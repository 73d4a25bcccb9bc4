"""SelectionService: SelectBatch (PCoreSet and baselines) over inline or registered pools."""
