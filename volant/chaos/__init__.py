"""The chaos harness: faults against a running volantd, invariants checked after each."""
