"""segbench's benchmark apparatus: unet_bench (U-Net and data-pipeline workloads), benchsuite (the suite
scripts/bench.py runs), floors (measured GPU figures against FLOP and byte floors). Never imported by the product."""
