// The official OpenAI Node SDK, unmodified, calling the gateway as if it were Azure OpenAI.
// Prints one JSON line with what it got; exits 1 on any failure. Used by tests/e2e.
import { AzureOpenAI, NotFoundError } from "openai";

const endpoint = process.env.GATEWAY_URL;
const deployment = process.env.DEPLOYMENT;
// Either a client key (apiKey) or an Entra ID token (azureADTokenProvider) authenticates.
const credential = process.env.GATEWAY_TOKEN
  ? { azureADTokenProvider: async () => process.env.GATEWAY_TOKEN }
  : { apiKey: process.env.GATEWAY_API_KEY };
const client = new AzureOpenAI({
  endpoint,
  ...credential,
  apiVersion: "2024-10-21",
  deployment,
  maxRetries: 0, // the gateway does the failover; the SDK must not hide a failure by retrying
});
const messages = [{ role: "user", content: "Say hello to the gateway tests." }];

async function main() {
  const out = {};

  const plain = await client.chat.completions
    .create({ model: deployment, messages, max_tokens: 20 })
    .withResponse();
  out.plain = {
    content: plain.data.choices[0]?.message?.content ?? "",
    finishReason: plain.data.choices[0]?.finish_reason ?? null,
    usage: plain.data.usage ?? null,
    servedBy: plain.response.headers.get("x-served-by"),
    attempts: plain.response.headers.get("x-gateway-attempts"),
  };

  const streamed = await client.chat.completions
    .create({ model: deployment, messages, max_tokens: 20, stream: true, stream_options: { include_usage: true } })
    .withResponse();
  let content = "";
  let finishReason = null;
  let usage = null;
  let chunks = 0;
  for await (const chunk of streamed.data) {
    chunks++;
    for (const choice of chunk.choices ?? []) {
      content += choice.delta?.content ?? "";
      finishReason = choice.finish_reason ?? finishReason;
    }
    usage = chunk.usage ?? usage;
  }
  out.stream = {
    content, finishReason, usage, chunks,
    servedBy: streamed.response.headers.get("x-served-by"),
    attempts: streamed.response.headers.get("x-gateway-attempts"),
  };

  // An unknown logical deployment surfaces as the SDK's NotFoundError with the gateway's code.
  try {
    await new AzureOpenAI({ endpoint, ...credential, apiVersion: "2024-10-21", deployment: "no-such-deployment", maxRetries: 0 })
      .chat.completions.create({ model: "no-such-deployment", messages, max_tokens: 5 });
    out.notFound = { error: "no error raised" };
  } catch (err) {
    out.notFound = { isNotFoundError: err instanceof NotFoundError, status: err.status ?? null, code: err.code ?? err.error?.code ?? null };
  }

  console.log(JSON.stringify(out));
}

main().catch((err) => {
  console.error(`sdk client failed: ${err?.status ?? ""} ${err?.message ?? err}`);
  process.exit(1);
});
