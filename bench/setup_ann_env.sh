#!/usr/bin/env bash
# Virtual environments for bench/ann_candidates.py: ScaNN and DiskANN are evaluated as
# candidate-stage baselines, never installed beside muvera. They cannot share one environment
# (their numpy pins conflict), so each gets its own, with faiss-cpu for the side-by-side rows.
#   bash bench/setup_ann_env.sh [ROOT]        (default ~/.cache/muvera)
set -euo pipefail
ROOT="${1:-$HOME/.cache/muvera}"
for lib in scann diskann; do
  VENV="$ROOT/ann-venv-$lib"
  python3 -m venv "$VENV"
  case $lib in
    scann) "$VENV/bin/pip" install -q "scann==1.4.2" faiss-cpu ;;
    diskann) "$VENV/bin/pip" install -q "diskannpy==0.7.0" faiss-cpu ;;
  esac
  echo "ready: $VENV/bin/python bench/ann_candidates.py DIR --libs $lib"
done
