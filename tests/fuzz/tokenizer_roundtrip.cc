// libFuzzer target: arbitrary bytes through the Qwen3 tokenizer. Invariants checked: encode never
// crashes on any input (invalid UTF-8 is repaired to U+FFFD first); every id is in the vocab;
// decode returns valid UTF-8; for valid UTF-8 input, decode(encode(s)) == NFC(s) (Qwen3's
// normalizer is NFC and its byte-level BPE is lossless); the streaming detokenizer agrees with
// decode. The tokenizer is loaded once, from GYRE_TOKENIZER_DIR or the fixture under
// GYRE_SOURCE_DIR.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "gyre/tokenizer/normalizer.h"
#include "gyre/tokenizer/tokenizer.h"
#include "gyre/tokenizer/utf8_util.h"

using namespace gyre::tokenizer;

static const Tokenizer& tok() {
  static std::shared_ptr<const Tokenizer> t = [] {
    const char* env = std::getenv("GYRE_TOKENIZER_DIR");
    std::string dir = env ? env : std::string(GYRE_SOURCE_DIR) + "/tests/fixtures/tokenizers/qwen3";
    return Tokenizer::from_dir(dir);
  }();
  return *t;
}

static void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "tokenizer_roundtrip: %s\n", what);
    std::abort();
  }
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string s(reinterpret_cast<const char*>(data), size);
  const Tokenizer& t = tok();
  auto ids = t.encode(s, size % 2 == 0);
  for (int32_t id : ids) check(id >= 0 && id < t.vocab_size(), "id out of range");
  std::string back = t.decode(ids, false);
  check(utf8_is_valid(back), "decode returned invalid UTF-8");
  if (utf8_is_valid(s)) {
    check(back == unicode_normalize(s, UnicodeForm::nfc), "decode(encode(s)) != NFC(s)");
  } else {
    check(back == unicode_normalize(utf8_lossy(s), UnicodeForm::nfc), "lossy round trip differs");
  }
  IncrementalDetokenizer det(std::shared_ptr<const Tokenizer>(&t, [](const Tokenizer*) {}), false);
  std::string streamed;
  for (int32_t id : ids) {
    std::string piece = det.push(id);
    check(utf8_is_valid(piece), "streamed piece is invalid UTF-8");
    streamed += piece;
  }
  streamed += det.finish();
  check(streamed == back, "streamed text differs from decode");
  return 0;
}
