// Order-preserving integer keys: the one representation every path selects on (SPEC §3).
#pragma once
#include <cstdint>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace persistent_topk {

// Per dtype: how to turn one logit into a 32-bit key whose unsigned order is SPEC §3's ranking.
// Negative values flip every bit, non-negative ones only the sign bit (so -0.0 sits just below +0.0),
// and every NaN becomes the largest key, above +inf, as torch.topk ranks it. 16-bit types keep their
// key in the upper half, so one radix schedule serves every dtype; kSignificantBits stops it early.
template <typename T>
struct KeyTraits;

template <>
struct KeyTraits<float> {
  static constexpr int kSignificantBits = 32;
  // Branch-free: the sign bit spread over the word selects which bits flip (one shift, one
  // three-input logic op), and a NaN test by the float unit replaces masking the exponent.
  __device__ __forceinline__ static uint32_t to_key(float x) {
    const uint32_t u = __float_as_uint(x);
    const uint32_t flip = static_cast<uint32_t>(static_cast<int32_t>(u) >> 31) | 0x80000000u;
    return isnan(x) ? 0xFFFFFFFFu : (u ^ flip);
  }
  __device__ __forceinline__ static float minus_inf() { return __uint_as_float(0xFF800000u); }
};

template <typename Half16, uint16_t kInfBits>
struct KeyTraits16 {
  static constexpr int kSignificantBits = 16;
  __device__ __forceinline__ static uint32_t bits_to_key(uint32_t u) {
    if ((u & 0x7FFFu) > kInfBits) return 0xFFFF0000u;
    const uint32_t key = (u & 0x8000u) ? (~u & 0xFFFFu) : (u | 0x8000u);
    return key << 16;
  }
  __device__ __forceinline__ static uint32_t to_key(Half16 x) {
    return bits_to_key(static_cast<uint32_t>(*reinterpret_cast<const uint16_t*>(&x)));
  }
  __device__ __forceinline__ static Half16 minus_inf() {
    const uint16_t bits = 0x8000u | kInfBits;
    return *reinterpret_cast<const Half16*>(&bits);
  }
};

template <>
struct KeyTraits<__nv_bfloat16> : KeyTraits16<__nv_bfloat16, 0x7F80u> {};
template <>
struct KeyTraits<__half> : KeyTraits16<__half, 0x7C00u> {};

template <typename T>
__device__ __forceinline__ uint32_t to_key(T x) {
  return KeyTraits<T>::to_key(x);
}

// One logit copied as raw bits: values out are the input's bits exactly (NaN payloads and signs
// included), with no float conversion on the way.
template <typename T>
__device__ __forceinline__ void copy_logit(T* dst, const T* src) {
  static_assert(sizeof(T) == 2 || sizeof(T) == 4, "16- or 32-bit logits");
  if constexpr (sizeof(T) == 4) {
    *reinterpret_cast<uint32_t*>(dst) = *reinterpret_cast<const uint32_t*>(src);
  } else {
    *reinterpret_cast<uint16_t*>(dst) = *reinterpret_cast<const uint16_t*>(src);
  }
}

// Keys of the 16 bytes in `v`, which hold 16 / sizeof(T) consecutive logits.
template <typename T>
__device__ __forceinline__ void unpack_keys(const uint4& v, uint32_t* keys);

template <>
__device__ __forceinline__ void unpack_keys<float>(const uint4& v, uint32_t* keys) {
  keys[0] = to_key(__uint_as_float(v.x));
  keys[1] = to_key(__uint_as_float(v.y));
  keys[2] = to_key(__uint_as_float(v.z));
  keys[3] = to_key(__uint_as_float(v.w));
}

template <typename T>
__device__ __forceinline__ void unpack_keys16(const uint4& v, uint32_t* keys) {
  const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    keys[2 * j] = KeyTraits<T>::bits_to_key(words[j] & 0xFFFFu);
    keys[2 * j + 1] = KeyTraits<T>::bits_to_key(words[j] >> 16);
  }
}
template <>
__device__ __forceinline__ void unpack_keys<__nv_bfloat16>(const uint4& v, uint32_t* keys) {
  unpack_keys16<__nv_bfloat16>(v, keys);
}
template <>
__device__ __forceinline__ void unpack_keys<__half>(const uint4& v, uint32_t* keys) {
  unpack_keys16<__half>(v, keys);
}

}  // namespace persistent_topk
