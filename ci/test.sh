#!/usr/bin/env bash
# The test command (README.md "Tests"). Installs what the tests need that is not Rust — a Python
# venv with moto (the S3 server the tests start on 127.0.0.1), pyarrow (the second Parquet
# reader) and Hugging Face `datasets` (the third), Debian's Slurm and munge (single-node cluster),
# chromium and chromium-driver (the report's checks; the Turing page driven by clicks) — then runs
# the whole test suite (one test also uses util-linux's `unshare`, in every Debian). Installing the Debian packages needs root (apt-get); the script skips any
# already installed. Extra arguments go to `cargo test` (e.g. `ci/test.sh e2e -- --nocapture`).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${SIMGAN_VENV:-$PWD/.venv}"
if ! "$venv/bin/python" -c 'import moto, pyarrow, PIL, yaml, datasets' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]' pyarrow pillow pyyaml datasets
fi
# Debian packages: Slurm for the distributed tests (the tests start it), chromium for the report.
pkgs=()
command -v slurmctld >/dev/null || pkgs+=(slurmctld)
command -v slurmd >/dev/null || pkgs+=(slurmd)
command -v sbatch >/dev/null || pkgs+=(slurm-client)
command -v munged >/dev/null || pkgs+=(munge)
command -v chromium >/dev/null || pkgs+=(chromium)
command -v chromedriver >/dev/null || pkgs+=(chromium-driver)
if [ ${#pkgs[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends "${pkgs[@]}" >/dev/null \
    || { apt-get update >/dev/null && apt-get install -y --no-install-recommends "${pkgs[@]}" >/dev/null; }
fi
export SIMGAN_CHROMIUM="$(command -v chromium)"
export SIMGAN_MOTO_SERVER="$venv/bin/moto_server"
export SIMGAN_PYTHON="$venv/bin/python"
# Plain `cargo test` skips (as "ignored", with the reason) the tests that need what this script
# installs; here they all run. The library's measurement probes (`probe_*`) are run by hand only.
harness=(--include-ignored --skip probe_)
for a in "$@"; do
  if [ "$a" = "--" ]; then exec cargo test --locked "$@" "${harness[@]}"; fi
done
exec cargo test --locked "$@" -- "${harness[@]}"
