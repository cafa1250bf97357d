#!/bin/bash
# Packs binaries built here for a device-machine call: stripped copies in DIR/bin.tar.xz and every
# shared library they load that the device image lacks in DIR/lib.tar.xz (OpenBLAS, fmt, yaml-cpp,
# PCRE2, utf8proc, GiNaC, OpenMPI's libraries — gyre links MPI even where a run never starts it).
# Left out: glibc, libstdc++ / libgcc (the device's are newer), and CUDA's libraries (cudart,
# cuBLAS, cuDNN, NCCL come from the device's CUDA and pip wheels; see *_device_run.sh).
# Usage: bash bench/pack_device_libs.sh DIR BINARY...   (DIR must be in .git/info/exclude)
# On the device, `source bench/device_env.sh` (with D=DIR) unpacks it and sets LD_LIBRARY_PATH.
set -euo pipefail
dir=$1
shift
rm -rf "$dir/bin" "$dir/lib"
mkdir -p "$dir/bin" "$dir/lib"
for b in "$@"; do
  cp "$b" "$dir/bin/"
  strip "$dir/bin/$(basename "$b")"
  ldd "$b" | awk '/=> \// {print $3}' | while read -r lib; do
    case $(basename "$lib") in
      libc.so* | libm.so* | libpthread.so* | libdl.so* | librt.so* | ld-linux* | libstdc++.so* | \
        libgcc_s.so* | libcuda.so* | libcudart.so* | libcublas* | libcudnn* | libnccl* | \
        libnvidia* | libresolv.so*) ;;
      *) cp -L -n "$lib" "$dir/lib/" ;;
    esac
  done
done
# xz -9e: its 64 MiB window spans the binaries, which share most of their code (the static
# libraries): eight test and bench binaries pack into ~8 MB instead of ~35 at the default level.
(cd "$dir" && XZ_OPT="${XZ_OPT:--9e -T2}" tar cJf lib.tar.xz lib &&
  XZ_OPT="${XZ_OPT:--9e -T2}" tar cJf bin.tar.xz bin && rm -rf lib bin)
du -sh "$dir"/*.tar.xz
