#include "gyre/core/philox.h"

#include <cmath>

namespace gyre {

float PhiloxStream::next_normal() {
  float u1 = next_uniform(), u2 = next_uniform();
  if (u1 < 1e-7f) u1 = 1e-7f;
  return std::sqrt(-2.0f * std::log(u1)) * std::cos(6.283185307179586f * u2);
}

void PhiloxStream::seek(uint64_t offset, int index) {
  if (index >= 4) {
    offset_ = offset;
    idx_ = 4;
    return;
  }
  offset_ = offset - 1;
  Philox4x32::draw(seed_, stream_, offset_++, buf_);
  idx_ = index;
}

}  // namespace gyre
