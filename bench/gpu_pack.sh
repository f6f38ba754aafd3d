#!/usr/bin/env bash
# gpu_pack.sh: makes the folder that bench/gpu_lease.sh takes to a lent GPU
# machine: the kiln binary of BUILD, the runtime archives `kiln build`
# links (beside it, where kiln looks), and the shared libraries it needs
# that the GPU machine's image lacks, compressed (LLVM 19 and what it links;
# the C library, libstdc++ and NVRTC are the machine's own).
#   bench/gpu_pack.sh [BUILD] [DEST]        (default build gpu_carry)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build} dest=${2:-gpu_carry}
rm -rf "$dest"
mkdir -p "$dest/runtime" "$dest/libs"
cp "$build/kiln" "$dest/"
cp "$build"/runtime/libkiln_rt_main.a "$build"/runtime/libkiln_rt_cuda_main.a "$dest/runtime/"
ldd "$build/kiln" | awk '$3 ~ /^\// {print $1, $3}' | while read -r name path; do
  case $name in
  libc.so* | libm.so* | libstdc++* | libgcc_s* | libpthread* | libdl.so* | librt.so* | libnvrtc* | libz.so* | \
    libzstd* | liblzma*) ;;
  *) cp -L "$path" "$dest/libs/$name" ;;
  esac
done
tar cf - -C "$dest" libs | xz -T0 -6 >"$dest/libs.tar.xz"
rm -rf "$dest/libs"
du -sh "$dest"
