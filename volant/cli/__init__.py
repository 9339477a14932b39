"""volar: the command-line client of the volantd API."""
