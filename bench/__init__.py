"""`make bench`: reproducible figures for reads, ingest, scale and replay, each beside a same-run baseline."""
