"""The engine: reading source rows, running extractors over them, planning and writing batches."""
