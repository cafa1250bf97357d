# Sourced by a device-machine script (bash): unpacks the folder bench/pack_device_libs.sh made and
# points the dynamic loader at it. Reads D (the carried folder, default .devrun) and SRC_LINK (a
# path to link to the working tree: the test binaries' GYRE_SOURCE_DIR, where their fixtures are;
# unset: none). Sets LD_LIBRARY_PATH (the packed libraries, the device's CUDA, and the cuBLAS /
# cuDNN / NCCL pip wheels where python3 finds them) and GYRE_BIN (the packed CLI, for tests that
# spawn it).
D=${D:-${GYRE_DEVRUN:-.devrun}}
[[ -d $D/lib || ! -f $D/lib.tar.xz ]] || tar xJf "$D/lib.tar.xz" -C "$D"
[[ -d $D/bin || ! -f $D/bin.tar.xz ]] || tar xJf "$D/bin.tar.xz" -C "$D"
device_wheel_lib() {  # python module -> its lib folder, or nothing
  python3 -c "import $1, os; print(os.path.join(list($1.__path__)[0], 'lib'))" 2>/dev/null
}
export LD_LIBRARY_PATH=$PWD/$D/lib:/usr/local/cuda/lib64:$(device_wheel_lib nvidia.cublas):$(device_wheel_lib nvidia.cudnn):$(device_wheel_lib nvidia.nccl):${LD_LIBRARY_PATH:-}
[[ -n ${SRC_LINK:-} && ! -e $SRC_LINK ]] && ln -s "$PWD" "$SRC_LINK"
[[ -x $D/bin/gyre ]] && export GYRE_BIN=$PWD/$D/bin/gyre
true
