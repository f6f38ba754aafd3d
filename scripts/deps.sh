#!/usr/bin/env bash
# deps.sh: installs what kiln needs to build and test, from Debian 12's apt,
# skipping what is already there.  Run as root or with sudo available.
set -euo pipefail

pkgs=(
  build-essential cmake flex bison   # the build
  libcmocka-dev                      # unit tests
  llvm-19-dev                        # the CPU backend (LLVM C API, JIT)
  clang libclang-rt-14-dev           # libFuzzer and the sanitizers
  graphviz                           # rendering `kiln show --format dot`
  python3-numpy                      # tests read kiln's .npy files with NumPy
  dataset-fashion-mnist              # real training data (IDX files)
)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi
echo "deps.sh: installing ${missing[*]}"
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
