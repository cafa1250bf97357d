# GYRE_CUDA=AUTO builds the CUDA backend when nvcc is found, ON requires it, OFF skips it.
# Hopper: sm_90a SASS plus compute_90 PTX so newer GPUs JIT it.
set(GYRE_HAVE_CUDA OFF)
if(NOT GYRE_CUDA STREQUAL "OFF")
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    enable_language(CUDA)
    find_package(CUDAToolkit REQUIRED)
    # CMake 3.25 does not know nvcc 13's C++20 flag; the .cu files need only C++17.
    set(CMAKE_CUDA_STANDARD 17)
    set(CMAKE_CUDA_ARCHITECTURES OFF)
    set(GYRE_CUDA_FLAGS -gencode=arch=compute_90a,code=sm_90a -gencode=arch=compute_90,code=compute_90
        --expt-relaxed-constexpr -lineinfo)
    set(GYRE_HAVE_CUDA ON)
  elseif(GYRE_CUDA STREQUAL "ON")
    message(FATAL_ERROR "GYRE_CUDA=ON but no nvcc found (install the CUDA toolkit or use -DGYRE_CUDA=OFF)")
  endif()
endif()
message(STATUS "gyre: CUDA backend ${GYRE_HAVE_CUDA}")
