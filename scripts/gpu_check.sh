#!/usr/bin/env bash
# The README's GPU figures in one prepared run, on a machine with one CUDA GPU:
#
#   scripts/gpu_check.sh OUT_DIR [bench|runs|checks|all]
#
# bench:   python -m explorer.bench on synthetic ResNet-18 / 3x32x32 / 100-class tensors (fp32 and bf16, batch 256).
# runs:    short ResNet-18 training runs through the training CLI on a synthetic Tiny-ImageNet in the official
#          layout (explorer.data.tinyimagenet.write_miniature, 200 classes x 100 images, 64x64): IPS bf16, IPS bf16
#          --compile, CE bf16, IPS fp32, 2 epochs each. Nothing else should use the GPU during bench and runs.
# checks:  the CUDA tests (tests/test_cuda.py, tests/test_training_precision.py) and a torchrun run (one process per
#          GPU; with one GPU that is world size 1, which makes no NCCL process group).
# Each part writes its log to OUT_DIR (bench.txt, runs.txt, tests.txt, torchrun.txt) and keeps its run folders in
# OUT_DIR/runs. Every command has a time limit, so that one hung part does not take the others with it.
set -u
OUT=${1:?usage: scripts/gpu_check.sh OUT_DIR [bench|runs|checks|all]}
PART=${2:-all}
DATA=${DATA:-/tmp/ips-tiny}
mkdir -p "$OUT/runs"
export PYTHONUNBUFFERED=1
TRAIN="python -m explorer.train --dataset tinyimagenet --data-root $DATA --model resnet18 --batch-size 128
       --lr 0.1 --out $OUT/runs --log-every 50"

summary() {  # one line per epoch of a run: images/s and test accuracy
    python - "$1" <<'EOF'
import sys
from pathlib import Path
from explorer.training.runfolder import epoch_records
for r in epoch_records(Path(sys.argv[1])):
    print(f"  {sys.argv[1].rsplit('/', 1)[-1]} epoch {r['epoch']}: {r['images_per_s']:.0f} images/s, "
          f"test accuracy {100 * r['test_accuracy']:.2f} %, {r['elapsed']:.1f} s since start")
EOF
}

miniature() {
    [[ -d $DATA/tiny-imagenet-200 ]] || python -c "from explorer.data.tinyimagenet import write_miniature as w
w('$DATA', classes=200, train_per_class=100, val_per_class=10)"
}

if [[ $PART == bench || $PART == all ]]; then
    {
        nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
        python -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda)"
        timeout 300 python -m explorer.bench --model resnet18 --image-shape 3x32x32 --classes 100 --batch-size 256 \
            --precision fp32,bf16 --patch-sizes 4,8 --repeats 20 --rounds 2
    } 2>&1 | tee "$OUT/bench.txt"
fi

if [[ $PART == runs || $PART == all ]]; then
    {
        miniature
        for run in "ips-bf16 --method ips --precision bf16 --epochs 2" \
                   "ips-bf16-compile --method ips --precision bf16 --epochs 2 --compile" \
                   "ce-bf16 --method ce --precision bf16 --epochs 2" \
                   "ips-fp32 --method ips --precision fp32 --epochs 2"; do
            set -- $run
            echo "== $*"
            timeout 240 $TRAIN --run-id "$@" > "$OUT/runs/$1.log" 2>&1 || echo "  FAILED: see runs/$1.log"
            tail -1 "$OUT/runs/$1.log"
            summary "$OUT/runs/$1"
        done
    } 2>&1 | tee "$OUT/runs.txt"
fi

if [[ $PART == checks || $PART == all ]]; then
    timeout 400 python -m pytest -q -rs tests/test_cuda.py tests/test_training_precision.py 2>&1 | tee "$OUT/tests.txt"
    {
        miniature
        timeout 240 torchrun --standalone --nproc_per_node 1 -m explorer.train --dataset tinyimagenet \
            --data-root "$DATA" --model resnet18 --method ips --epochs 2 --out "$OUT/runs" --run-id ips-torchrun \
            --log-every 50 2>&1 | tail -4
        python -c "import json; c = json.load(open('$OUT/runs/ips-torchrun/config.json'))['environment']; print(c)"
        summary "$OUT/runs/ips-torchrun"
    } 2>&1 | tee "$OUT/torchrun.txt"
fi
