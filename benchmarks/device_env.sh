# Sourced by the device scripts (gpu_bench.sh, gpu_session.sh) from the checkout's root: a python3 that
# imports ffd from this checkout, with hydra-core / omegaconf / antlr4 from the wheels in .whl/ on a machine
# whose Python lacks them (../shared/tools/device-wheels.sh writes them; the device call carries [".whl"]).
# Sets OUT (default /tmp/ffd/out, created) and FFD_ROOT (default /tmp/ffd).
if ls .whl/*.whl >/dev/null 2>&1; then
  if [ ! -d /tmp/site/hydra ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl ||
      exit 1
  fi
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD/src PYTHONUNBUFFERED=1 FFD_ROOT=${FFD_ROOT:-/tmp/ffd} HYDRA_FULL_ERROR=1
python3 -c "import hydra, omegaconf, antlr4" || {
  echo "$(basename "$0"): hydra-core, omegaconf or antlr4 is missing: run ../shared/tools/device-wheels.sh" \
    "here and pass .whl in the device call's carry=[\".whl\"] (it is git-ignored)." >&2
  exit 2
}
export OUT=${OUT:-/tmp/ffd/out}
mkdir -p "$OUT"
