"""Infrastructure shared by pairgen and segbench, and nothing else.

errors (one-line user errors), files (atomic writes, checksums), torchio (safe torch save/load, RNG states),
jsonlog (append-only JSON-lines logs that survive a torn last line), devices (one device resolver), distributed
(torchrun helpers), workspace (the on-disk layout), config (the frozen-config base), curves (training curves),
cli (the typer runner). segbench imports pairgen only through this package, pairgen.shards (the schema),
pairgen.checkpoint.load_generator and pairgen.encoding.decode_mask.
"""
