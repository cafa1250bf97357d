// Element types and the f32 <-> bf16/f16 conversions (round to nearest, ties to even; NaN stays
// NaN).
#pragma once
#include <cstdint>
#include <cstring>
#include <string>

namespace gyre {

enum class DType : uint8_t { f32, f16, bf16, f64, i32, i64, u8, bool_ };

size_t dtype_size(DType t);
const char* dtype_name(DType t);        // "f32", "bf16", ...
const char* safetensors_name(DType t);  // "F32", "BF16", ...
// Parses a safetensors dtype string ("F32", "BF16", "F16", "F64", "I32", "I64", "U8", "BOOL");
// returns false for anything else (caller reports the file and tensor).
bool dtype_from_safetensors(const std::string& s, DType* out);
bool is_float(DType t);

inline uint32_t f32_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float f32_from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// bf16 is the upper half of an f32. Rounding: add 0x7FFF plus the lowest kept bit (ties to even).
inline uint16_t f32_to_bf16(float f) {
  uint32_t u = f32_bits(f);
  if ((u & 0x7F800000u) == 0x7F800000u && (u & 0x007FFFFFu)) return uint16_t((u >> 16) | 0x0040u);
  u += 0x7FFFu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
inline float bf16_to_f32(uint16_t h) { return f32_from_bits(uint32_t(h) << 16); }

uint16_t f32_to_f16(float f);
float f16_to_f32(uint16_t h);

// Bulk conversions.
void convert_to_f32(DType src_type, const void* src, float* dst, size_t n);
void convert_from_f32(const float* src, DType dst_type, void* dst, size_t n);

}  // namespace gyre
