"""pairgen's benchmark and profiling apparatus (scripts/bench.py, profile_gan.py, floors.py).

Nothing that trains, exports or evaluates imports this package; it imports the product, never the reverse.
timing (analytic FLOPs, paired timing, records), gan_bench (GAN and export workloads), reference (their plain
references), profiling (where a GAN iteration's time goes), traffic (bytes an eager step moves).
"""
