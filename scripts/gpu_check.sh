#!/usr/bin/env bash
# GPU check, for a machine with a CUDA GPU (about 5 minutes on one H100; every step is capped):
#   1. the tests marked `cuda` (tests/test_cuda.py): a training step, CPU/GPU agreement of the
#      field, its gradients and a render, exact resume, bf16/fp16 autocast, and a few hundred
#      iterations of model=small and experiment=fast;
#   2. scripts/bench.py for the tutorial config (experiment=tutorial, fp32 and bf16),
#      model=small and experiment=fast, printed as one table.
#
#   bash scripts/gpu_check.sh                         # from the repository root
#   PYTHON=/path/to/python NERF_LAB_COW_DIR=/data/cow_mesh bash scripts/gpu_check.sh
#
# PYTHON: an interpreter whose torch has CUDA and which has nerf_lab's dependencies (default:
# .venv/bin/python when its torch sees a GPU, else python3). The benchmarks run on the cow (the
# tutorial's data) from NERF_LAB_COW_DIR, ../shared/data/cow_mesh or the user cache; without a
# cow mesh (or with NERF_LAB_COW_DIR=none) the tutorial rows are skipped and the others use
# data=procedural.
# GPU_CHECK_DEVICE=cpu GPU_CHECK_ITERS=1 dry-runs the script itself on a CPU (the cuda tests skip).
# Exit status: 0 all passed, 1 a test failed, 3 no CUDA GPU visible to $PYTHON.
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE=${GPU_CHECK_DEVICE:-cuda}
ITERS=${GPU_CHECK_ITERS:-10}

pick_python() {
    if [[ -n ${PYTHON:-} ]]; then
        echo "$PYTHON"
    elif [[ -x .venv/bin/python ]] && .venv/bin/python -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
        echo .venv/bin/python
    else
        echo python3
    fi
}
PY=$(pick_python)
if [[ $DEVICE == cuda ]] && ! "$PY" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
    echo "gpu_check: no CUDA GPU visible to $PY (torch: $("$PY" -c 'import torch; print(torch.__version__)' 2>&1 | tail -n1)); nothing checked." >&2
    exit 3
fi
"$PY" - <<'EOF'
import torch
gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
print(f"gpu_check: torch {torch.__version__}, CUDA {torch.version.cuda}, GPUs: {gpus}")
EOF

OUT=${GPU_CHECK_OUT:-$(mktemp -d)}
mkdir -p "$OUT"
status=0

TEST_CAP=150
BENCH_CAP=75 # x 4 benchmarks: < 8 minutes in all
echo "== 1. tests marked cuda (cap ${TEST_CAP} s)"
PYTHONPATH=. timeout "$TEST_CAP" "$PY" -m pytest -q -p no:xdist -p no:cacheprovider -m cuda tests/test_cuda.py ||
    status=1

echo "== 2. benchmarks (cap ${BENCH_CAP} s each)"
COW=${NERF_LAB_COW_DIR:-}
[[ $COW == none ]] && COW="" NO_COW=1
for candidate in ../shared/data/cow_mesh "${NERF_LAB_CACHE_DIR:-$HOME/.cache/nerf_lab}/cow_mesh"; do
    [[ -z $COW && -z ${NO_COW:-} && -f $candidate/cow.obj ]] && COW=$candidate
done
if [[ -n $COW ]]; then
    DATA=("data.data_dir=$COW")
else
    DATA=(data=procedural)
    echo "gpu_check: no cow mesh (set NERF_LAB_COW_DIR): the tutorial rows are skipped, the others use data=procedural" >&2
fi
bench() { # label, overrides...
    local label=$1
    shift
    local rc=0 why
    PYTHONPATH=. timeout "$BENCH_CAP" "$PY" scripts/bench.py --warmup 3 --iters "$ITERS" \
        --render-size 256 "trainer.device=$DEVICE" "$@" >"$OUT/$label.json" 2>"$OUT/$label.err" ||
        rc=$?
    if [[ $rc -ne 0 ]]; then
        why=$(tail -n1 "$OUT/$label.err" | tr -d '"\\')
        [[ $rc -eq 124 ]] && why="timed out after ${BENCH_CAP}s (data generation included)"
        echo "{\"overrides\": \"$*\", \"error\": \"rc=$rc: $why\"}" >"$OUT/$label.json"
    fi
}
if [[ -n $COW ]]; then
    bench 1_tutorial_fp32 experiment=tutorial "${DATA[@]}"
    bench 2_tutorial_bf16 experiment=tutorial trainer.precision=bf16 "${DATA[@]}"
fi
bench 3_small model=small "${DATA[@]}"
bench 4_fast experiment=fast "${DATA[@]}"

"$PY" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path

rows = []
for path in sorted(Path(sys.argv[1]).glob("*.json")):
    lines = [ln for ln in path.read_text().splitlines() if ln.startswith("{")]
    r = json.loads(lines[-1]) if lines else {"error": "no output"}
    over = r.get("overrides", "")
    over = " ".join(over) if isinstance(over, list) else over
    if "error" in r:
        rows.append([over, "error: " + r["error"][:100], "", "", "", ""])
        continue
    rows.append([
        " ".join(o for o in over.split() if not o.startswith(("trainer.device", "data.data_dir"))),
        r["device"], f"{r['iter_s_median'] * 1000:.1f}", f"{r['rays_per_s']:.0f}",
        f"{r['points_per_s'] / 1e6:.1f}", f"{r['render_s']:.3f}" if r.get("render_s") else "",
    ])
head = ["config", "device", "ms/iter (median)", "rays/s", "Mpoints/s", "render 256² (s)"]
print("| " + " | ".join(head) + " |")
print("|" + "---|" * len(head))
for row in rows:
    print("| " + " | ".join(row) + " |")
EOF
echo "gpu_check: raw results in $OUT"
exit $status
