// Drives a running `gyre serve` with the official OpenAI Node SDK (run by
// tests/e2e/serve/serve_e2e_test.cc): models, chat (logprobs, top_logprobs, n, stop, seed),
// streaming chat whose deltas must concatenate to the non-streamed text, a final usage chunk,
// tools, completions with logprobs, and OpenAI-shaped errors. Usage: node openai_client.mjs URL
// Exits non-zero (with the failed assertion) on any mismatch; prints "OK" otherwise.
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const base = process.argv[2];
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'unused', maxRetries: 0 });
const messages = [{ role: 'user', content: 'hello there' }];
// Random-weight fixture model: greedy decoding with ignore_eos makes the outputs deterministic.
const greedy = { temperature: 0, max_tokens: 12, ignore_eos: true };

const models = await client.models.list();
assert.equal(models.data.length, 1);
const model = models.data[0].id;

// Chat, non-stream, with log-probs.
const chat = await client.chat.completions.create({
  model, messages, ...greedy, logprobs: true, top_logprobs: 3,
  chat_template_kwargs: { enable_thinking: false }, separate_reasoning: false,
});
assert.equal(chat.object, 'chat.completion');
assert.equal(chat.choices.length, 1);
const c0 = chat.choices[0];
assert.equal(c0.message.role, 'assistant');
assert.equal(c0.finish_reason, 'length');
assert.equal(c0.logprobs.content.length, 12);
for (const t of c0.logprobs.content) {
  assert.ok(t.logprob <= 0, 'log-prob must be <= 0');
  assert.equal(t.top_logprobs.length, 3);
  assert.ok(t.top_logprobs[0].logprob >= t.top_logprobs[2].logprob);
}
assert.equal(chat.usage.completion_tokens, 12);
assert.equal(chat.usage.total_tokens, chat.usage.prompt_tokens + 12);

// The same request streamed: deltas concatenate to the same text; usage arrives last.
const stream = await client.chat.completions.create({
  model, messages, ...greedy, stream: true, stream_options: { include_usage: true },
  chat_template_kwargs: { enable_thinking: false }, separate_reasoning: false,
});
let text = '';
let finish = null;
let usage = null;
let first = true;
for await (const chunk of stream) {
  if (chunk.usage) usage = chunk.usage;
  if (!chunk.choices.length) continue;
  const ch = chunk.choices[0];
  if (first) {
    assert.equal(ch.delta.role, 'assistant');
    first = false;
  }
  if (ch.delta.content) text += ch.delta.content;
  if (ch.finish_reason) finish = ch.finish_reason;
}
assert.equal(text, c0.message.content ?? '');
assert.equal(finish, 'length');
assert.equal(usage.completion_tokens, 12);

// n samples with a seed are reproducible.
const a = await client.chat.completions.create({ model, messages, max_tokens: 6, n: 2, seed: 7, ignore_eos: true });
const b = await client.chat.completions.create({ model, messages, max_tokens: 6, n: 2, seed: 7, ignore_eos: true });
assert.equal(a.choices.length, 2);
assert.deepEqual(a.choices.map((c) => c.message.content), b.choices.map((c) => c.message.content));

// Tools: the template renders them (longer prompt); the reply is a valid assistant message.
const tools = [{ type: 'function', function: { name: 'get_weather', description: 'Weather in a city',
  parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } } }];
const withTools = await client.chat.completions.create({ model, messages, tools, ...greedy, separate_reasoning: false });
assert.ok(withTools.usage.prompt_tokens > chat.usage.prompt_tokens + 20);
assert.ok(['length', 'stop', 'tool_calls'].includes(withTools.choices[0].finish_reason));
for (const tc of withTools.choices[0].message.tool_calls ?? []) {
  assert.equal(tc.type, 'function');
  JSON.parse(tc.function.arguments);
}

// Completions with token-id prompts and log-probs; streamed text concatenates to the same.
const comp = await client.completions.create({ model, prompt: [1, 2, 3], max_tokens: 8, temperature: 0, logprobs: 2, ignore_eos: true });
assert.equal(comp.object, 'text_completion');
assert.equal(comp.choices[0].logprobs.token_logprobs.length, 8);
const cs = await client.completions.create({ model, prompt: [1, 2, 3], max_tokens: 8, temperature: 0, stream: true, ignore_eos: true });
let ctext = '';
for await (const chunk of cs) ctext += chunk.choices[0]?.text ?? '';
assert.equal(ctext, comp.choices[0].text);

// Errors are OpenAI-shaped (the SDK maps them to APIError with status and message).
await assert.rejects(
  client.chat.completions.create({ model, messages, max_tokens: 100000 }),
  (e) => e.status === 400 && /context length/.test(e.message));
await assert.rejects(
  client.chat.completions.create({ model, messages: 'nope' }),
  (e) => e.status === 400 && /messages/.test(e.message));

console.log('OK');
