// ApiServer's OpenAI routes: /v1/chat/completions and /v1/completions over the engine, streamed
// (incremental deltas, optional final usage chunk) or not (openai_api.h renders the JSON).
#include <unordered_map>

#include "gyre/serve/api_state.h"
#include "gyre/serve/native_api.h"

namespace gyre::serve {

using infer::GenerateResult;

namespace {

struct OpenAiJob {
  std::mutex mu;
  OpenAiCall call;
  std::string id;
  int64_t created = 0;
  std::vector<GenerateResult> results;
  std::vector<std::unique_ptr<ChoiceStream>> streams;
  std::unordered_map<std::string, size_t> slot_of;
  size_t remaining = 0;
  bool failed = false;
  std::shared_ptr<Responder> res;
  std::vector<double> last_chunk;  // per slot, for the TTFT / ITL metrics
  double start = 0;
};

}  // namespace

void handle_openai(const std::shared_ptr<ApiServer::State>& st, HttpRequest& req,
                   const std::shared_ptr<Responder>& res, bool chat) {
  auto job = std::make_shared<OpenAiJob>();
  job->call =
      chat ? parse_chat_request(req.body, st->oai) : parse_completion_request(req.body, st->oai);
  st->prepare(job->call.requests);
  OpenAiCall& call = job->call;
  const size_t n = size_t(call.n);
  job->id = (chat ? "chatcmpl-" : "cmpl-") + st->new_rid();
  job->created = unix_time();
  job->results.resize(call.slots());
  job->remaining = call.slots();
  job->res = res;
  job->last_chunk.assign(call.slots(), 0.0);
  job->start = steady_now_s();
  for (size_t p = 0; p < call.requests.size(); ++p)
    for (size_t k = 0; k < n; ++k) {
      std::string rid =
          n == 1 ? call.requests[p].rid : fmt::format("{}-{}", call.requests[p].rid, k);
      job->slot_of[rid] = p * n + k;
      if (call.stream)
        job->streams.push_back(
            std::make_unique<ChoiceStream>(job->call, st->oai, int32_t(p * n + k)));
    }
  if (call.stream) res->begin_stream(200, "text/event-stream");
  std::vector<std::string> rids;
  for (const auto& r : call.requests) rids.push_back(r.rid);
  res->on_disconnect([st, rids] {
    for (const auto& rid : rids) st->engine->abort(rid);
    st->metrics.disconnect_aborts++;
  });

  auto usage_so_far = [st](OpenAiJob& j) {
    std::vector<GenerateResult> parts(j.results.size());
    for (size_t s = 0; s < parts.size(); ++s) {
      parts[s].prompt_tokens = int32_t(j.call.requests[s / size_t(j.call.n)].input_ids.size());
      parts[s].completion_tokens = j.streams[s]->completion_tokens();
      parts[s].cached_tokens = j.results[s].cached_tokens;
    }
    return openai_usage(j.call, st->oai, parts);
  };

  for (size_t p = 0; p < call.requests.size(); ++p) {
    infer::RequestCallbacks cb;
    if (call.stream) {
      cb.on_chunk = [st, job, usage_so_far](const infer::TokenChunk& c) {
        std::lock_guard<std::mutex> lk(job->mu);
        auto it = job->slot_of.find(c.rid);
        if (it == job->slot_of.end() || job->failed) return;
        st->metrics.observe_chunk(job->start, job->last_chunk[it->second], c.output_ids.size(),
                                  steady_now_s());
        std::string out;
        for (auto& ch : job->streams[it->second]->on_chunk(c))
          out +=
              sse_event(openai_chunk(job->call, job->id, job->created, json::array({std::move(ch)}),
                                     job->call.continuous_usage ? usage_so_far(*job) : json()));
        if (!out.empty()) job->res->write(std::move(out));
      };
    }
    cb.on_done = [st, job, p, usage_so_far](GenerateResult&& r) {
      st->finished(r);
      std::lock_guard<std::mutex> lk(job->mu);
      auto it = job->slot_of.find(r.rid);
      size_t slot =
          it != job->slot_of.end() ? it->second : p * size_t(job->call.n) + size_t(r.index);
      if (slot >= job->results.size() || job->remaining == 0) return;
      if (!r.error.empty() && job->call.stream && !job->failed) {
        job->failed = true;  // SGLang: the error as one event, then [DONE]
        job->res->write(sse_event(json::parse(json_error_body(400, r.error))));
      }
      if (job->call.stream && !job->failed) {
        std::string out;
        for (auto& ch : job->streams[slot]->on_done(r))
          out +=
              sse_event(openai_chunk(job->call, job->id, job->created, json::array({std::move(ch)}),
                                     job->call.continuous_usage ? usage_so_far(*job) : json()));
        job->res->write(std::move(out));
      }
      job->results[slot] = std::move(r);
      if (--job->remaining > 0) return;
      if (job->call.stream) {
        if (job->call.include_usage && !job->failed)
          job->res->write(sse_event(openai_chunk(job->call, job->id, job->created, json::array(),
                                                 openai_usage(job->call, st->oai, job->results))));
        job->res->write(kSseDone);
        job->res->end_stream();
        return;
      }
      for (const auto& x : job->results)
        if (!x.error.empty()) {
          job->res->send(400, json_error_body(400, x.error));
          return;
        }
      job->res->send(
          200, dump_json(openai_response(job->call, st->oai, job->results, job->id, job->created,
                                         st->label(job->results[0].weight_version))));
    };
    st->in_flight += call.n;  // the engine answers each of the n samples with its own on_done
    st->engine->submit(call.requests[p], std::move(cb));
  }
}

}  // namespace gyre::serve
