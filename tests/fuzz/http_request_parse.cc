// libFuzzer target over the server's request-parsing layer: raw HTTP/1.1 bytes through Beast's
// request parser (as the server configures it), then the body through the /generate, OpenAI
// completions and chat parsers (with a real tokenizer and chat template), query/percent decoding
// and the rollout client's reply parser. Invariant: any input yields a parsed value or a
// gyre::Error (RequestError for wire input) -- never a crash, hang or other exception.
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "gyre/core/error.h"
#include "gyre/serve/http_rollout_client.h"
#include "gyre/serve/http_server.h"
#include "gyre/serve/native_api.h"
#include "gyre/serve/openai_api.h"
#include "gyre/serve/request_json.h"
#include "gyre/tokenizer/chat_template.h"
#include "gyre/tokenizer/tokenizer.h"

namespace {

using namespace gyre;
namespace http = boost::beast::http;

struct Env {
  std::shared_ptr<const tokenizer::Tokenizer> tok;
  std::shared_ptr<tokenizer::ChatTemplate> tmpl;
  serve::OpenAiContext ctx;
  Env() {
    // The Qwen3 fixture tokenizer and its chat template (vocabulary size does not matter here:
    // nothing is generated).
    std::string dir = std::string(GYRE_SOURCE_DIR) + "/tests/fixtures/tokenizers/qwen3";
    tok = tokenizer::Tokenizer::from_dir(dir);
    tmpl = std::make_shared<tokenizer::ChatTemplate>(tokenizer::ChatTemplate::from_dir(dir));
    ctx.tok = tok.get();
    ctx.chat_template = tmpl.get();
    ctx.context_len = 4096;
    ctx.tool_call_parser = "qwen25";
    ctx.reasoning_parser = "qwen3";
  }
};

void parse_body(const Env& env, const std::string& body) {
  try {
    serve::json j = serve::parse_json_object(body);
    serve::parse_generate(j, env.tok.get());
  } catch (const Error&) {
  }
  try {
    serve::parse_completion_request(body, env.ctx);
  } catch (const Error&) {
  }
  try {
    serve::parse_chat_request(body, env.ctx);
  } catch (const Error&) {
  }
  try {
    serve::parse_rollout_response(body, "r");
  } catch (const Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Env env;
  if (size == 0) return 0;
  std::string in(reinterpret_cast<const char*>(data + 1), size - 1);
  if (data[0] & 1) {
    // Raw HTTP request bytes, parsed exactly as HttpServer's sessions configure Beast.
    http::request_parser<http::string_body> p;
    p.body_limit(1 << 20);
    p.header_limit(64 * 1024);
    p.eager(true);
    boost::beast::error_code ec;
    size_t used = p.put(boost::asio::buffer(in), ec);
    if (!ec && p.is_header_done()) {
      serve::HttpRequest req;
      req.target = std::string(p.get().target());
      size_t q = req.target.find('?');
      req.path = serve::percent_decode(std::string_view(req.target).substr(0, q));
      if (q != std::string::npos) req.query = req.target.substr(q + 1);
      (void)req.query_param("url");
      (void)req.query_param("format");
      if (p.is_done()) parse_body(env, p.get().body());
    }
    (void)used;
  } else {
    parse_body(env, in);
  }
  return 0;
}
