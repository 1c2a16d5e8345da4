#!/usr/bin/env bash
# One accelerator session: versions, every preset's steady rate at R = 14,400 and 1,024, and
# one statistical test of the engine on the device. Writes its output under $OUT (or ./out).
set -u
out=${OUT:-out}
mkdir -p "$out"
export PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$out/gpu.txt"
python3 -c "import jax, optax; print('jax', jax.__version__, 'optax', optax.__version__, jax.devices())" 2>&1 | tee -a "$out/gpu.txt"
for r in 14400 1024; do
  timeout 200 python3 benchmarks/bench_models.py --replicas "$r" --peak-tflops 67 2>&1 | tee "$out/models_$r.txt"
done
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_ensembles.py -k "frozen or collapses" 2>&1 | tail -5 | tee "$out/tests.txt"
# a replica's numbers bitwise across chunkings on the device (the multilayer's hidden layer is
# a batched matrix product; on CPU its summation order does not follow the chunk)
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_engine.py -k "chunk_size" 2>&1 | tail -5 | tee "$out/chunking.txt"
