// The official OpenAI Node SDK, unmodified, calling the gateway as if it were Azure OpenAI.
// Prints one JSON line with what it got; exits 1 on any failure. Used by tests/e2e.
//
// By default: chat, plain and streamed, and an unknown deployment, with AzureOpenAI.
// MODE=api (tests/e2e/sdk_api_test.go): every API path, with AzureOpenAI (api-key) and with the
// plain OpenAI client on <gateway>/openai/v1/ (a Bearer client key); see apiMain.
import { createHash } from "node:crypto";
import { AzureOpenAI, NotFoundError, OpenAI, toFile } from "openai";

const endpoint = process.env.GATEWAY_URL;
const deployment = process.env.DEPLOYMENT;
const messages = [{ role: "user", content: "Say hello to the gateway tests." }];

async function main() {
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

// apiMain (MODE=api) makes every call an app makes of the v1 API, with both clients, and prints
// {"calls": [...], "response": id, "file": id, "conversation": id}: for each HTTP exchange, what the SDK got (status,
// x-served-by, apim-request-id, the sha256 of the answer's bytes, as read by a fetch wrapper,
// the SDK's documented `fetch` option, which also names each exchange in an X-Test-Call header) and whether the parsed answer looked right. PHASE=throttled:
// the gateway's first account is throttled; OLD_RESPONSE_ID, OLD_FILE_ID and OLD_CONVERSATION_ID
// are a response, a file and a conversation it holds.
async function apiMain() {
  const calls = [];
  const phase = process.env.PHASE ?? "direct";
  const account = phase === "throttled" ? "frc" : "swc";
  const real = { chat: { swc: "micro", frc: "big" } };
  // The fetch every client uses: the real one, plus a copy of each answer's bytes.
  const pending = [];
  let seq = 0;
  const recordingFetch = async (url, init = {}) => {
    if (String(url).startsWith("data:")) {
      return fetch(url, init); // the SDK's own probe of fetch's FormData support, before a multipart upload
    }
    // X-Test-Call names the exchange; the gateway passes it on, so the test finds what the
    // backend got for it.
    const callId = `node-${phase}-${++seq}`;
    const headers = new Headers(init.headers);
    headers.set("x-test-call", callId);
    const entry = { method: init.method ?? "GET", url: String(url), callId };
    const res = await fetch(url, { ...init, headers });
    Object.assign(entry, {
      status: res.status,
      servedBy: res.headers.get("x-served-by"),
      attempts: res.headers.get("x-gateway-attempts"),
      requestId: res.headers.get("apim-request-id"),
      retryAfter: res.headers.get("retry-after"),
    });
    pending.push(
      res.clone().arrayBuffer().then((b) => {
        entry.sha256 = createHash("sha256").update(Buffer.from(b)).digest("hex");
      }),
    );
    current.push(entry);
    return res;
  };
  let current = [];
  const clients = {
    azure: new AzureOpenAI({
      endpoint, apiKey: process.env.AZURE_KEY, apiVersion: process.env.API_VERSION, maxRetries: 0, fetch: recordingFetch,
    }),
    v1: new OpenAI({ baseURL: `${endpoint}/openai/v1/`, apiKey: process.env.V1_KEY, maxRetries: 0, fetch: recordingFetch }),
  };
  // op runs one SDK call; check returns what is wrong with its parsed answer, or "".
  const op = async (flavour, name, fn, check = () => "") => {
    current = [];
    let result;
    let error = "";
    let code = "";
    try {
      result = await fn();
    } catch (err) {
      error = `${err?.status ?? ""} ${err?.message ?? err}`;
      code = err?.code ?? err?.error?.code ?? "";
    }
    await Promise.all(pending.splice(0));
    let problem = "";
    if (result !== undefined) {
      try {
        problem = (await check(result)) || "";
      } catch (err) {
        problem = `checking the answer: ${err}`;
      }
    }
    await Promise.all(pending.splice(0));
    if (current.length !== 1) {
      problem ||= `${current.length} HTTP exchanges`;
    }
    for (const entry of current) {
      calls.push({ flavour, op: name, ...entry, error, code, check: problem });
    }
    return result;
  };
  const audio = Buffer.alloc(2 << 20);
  for (let i = 0; i < audio.length; i++) audio[i] = i % 251;
  const audioSum = createHash("sha256").update(audio).digest("hex").slice(0, 16);

  const made = {}; // what the azure client made, for the throttled phase
  for (const [flavour, c] of Object.entries(clients)) {
    const run = (name, fn, check) => op(flavour, name, fn, check);
    await run("chat", () => c.chat.completions.create({ model: "chat", messages }),
      (r) => (r.choices?.[0]?.message?.content ? "" : "no content"));
    const r1 = await run("responses create", () => c.responses.create({ model: "chat", input: "First turn." }),
      (r) => (r.id?.startsWith("resp_") && r.output_text ? "" : "no id or text"));
    if (flavour === "azure") made.response = r1?.id ?? "";
    let streamID = "";
    await run("responses stream", async () => {
      const stream = await c.responses.create({ model: "chat", input: "Stream it.", stream: true });
      const types = [];
      for await (const ev of stream) {
        types.push(ev.type);
        if (ev.type === "response.created") streamID = ev.response.id;
      }
      return types;
    }, (types) => (types[0] === "response.created" && types.at(-1) === "response.completed" ? "" : `events ${types}`));
    const r2 = await run("responses create (turn)",
      () => c.responses.create({ model: "chat", input: "Second turn.", previous_response_id: r1.id }),
      (r) => (r.previous_response_id === r1.id ? "" : "previous_response_id not echoed"));
    await run("responses create (turn on the stream)",
      () => c.responses.create({ model: "chat", input: "After the stream.", previous_response_id: streamID }),
      (r) => (r.previous_response_id === streamID ? "" : "previous_response_id not echoed"));
    await run("responses get", () => c.responses.retrieve(r1.id), (r) => (r.id === r1.id ? "" : "another id"));
    await run("responses input_items", () => c.responses.inputItems.list(r2.id),
      (page) => (page.data.length === 1 && JSON.stringify(page.data[0]).includes("Second turn.") ? "" : JSON.stringify(page.data)));
    const bg = await run("responses create (background)",
      () => c.responses.create({ model: "chat", input: "Take your time.", background: true }),
      (r) => (r.status === "queued" ? "" : `status ${r.status}`));
    await run("responses cancel", () => c.responses.cancel(bg.id), (r) => (r.status === "cancelled" ? "" : `status ${r.status}`));
    await run("responses delete", () => c.responses.delete(r2.id).then(() => "deleted"));
    await run("responses get after delete", () => c.responses.retrieve(r2.id));

    const conv = await run("conversations create",
      () => c.conversations.create({ items: [{ type: "message", role: "user", content: "Remember the number 42." }] }),
      (r) => (r.id?.startsWith("conv_") ? "" : "no id"));
    await run("conversations items create",
      () => c.conversations.items.create(conv.id, { items: [{ type: "message", role: "user", content: "And 7." }] }),
      (r) => (r.data?.length === 1 ? "" : JSON.stringify(r)));
    await run("responses create (in the conversation)",
      () => c.responses.create({ model: "chat", input: "Which numbers?", conversation: conv.id }),
      (r) => (r.conversation?.id === conv.id ? "" : JSON.stringify(r.conversation)));
    await run("conversations items list", () => c.conversations.items.list(conv.id),
      (page) => (page.data.length === 4 ? "" : `${page.data.length} items`));
    await run("conversations get", () => c.conversations.retrieve(conv.id), (r) => (r.id === conv.id ? "" : "another id"));

    const jsonl = Buffer.from(JSON.stringify({ custom_id: "1", method: "POST", url: "/v1/chat/completions",
      body: { model: real.chat[account], messages: [{ role: "user", content: "hi" }] } }) + "\n");
    const file = await run("files upload",
      async () => c.files.create({ file: await toFile(jsonl, "requests.jsonl", { type: "application/jsonl" }), purpose: "batch" }),
      (r) => (r.id?.startsWith("file-") && r.bytes === jsonl.length ? "" : JSON.stringify(r)));
    if (flavour === "azure") Object.assign(made, { file: file?.id ?? "", conversation: conv?.id ?? "" });
    await run("files get", () => c.files.retrieve(file.id), (r) => (r.id === file.id ? "" : "another id"));
    await run("files content", async () => Buffer.from(await (await c.files.content(file.id)).arrayBuffer()),
      (b) => (b.equals(jsonl) ? "" : "other content"));
    await run("files list", () => c.files.list(), (page) => (page.data[0]?.id === file.id ? "" : "not the newest first"));
    const batch = await run("batches create",
      () => c.batches.create({ input_file_id: file.id, endpoint: "/v1/chat/completions", completion_window: "24h" }),
      (r) => (r.id?.startsWith("batch_") && r.input_file_id === file.id ? "" : JSON.stringify(r)));
    await run("batches get", () => c.batches.retrieve(batch.id), (r) => (r.id === batch.id ? "" : "another id"));
    await run("batches cancel", () => c.batches.cancel(batch.id), (r) => (r.status === "cancelling" ? "" : `status ${r.status}`));
    const vs = await run("vector stores create", () => c.vectorStores.create({ name: "docs" }),
      (r) => (r.id?.startsWith("vs_") ? "" : "no id"));
    await run("vector stores get", () => c.vectorStores.retrieve(vs.id), (r) => (r.id === vs.id ? "" : "another id"));
    await run("vector stores delete", () => c.vectorStores.delete(vs.id), (r) => (r.deleted ? "" : "not deleted"));

    await run("images generate", () => c.images.generate({ model: "image", prompt: "A lighthouse in two regions." }),
      (r) => (r.data?.[0]?.b64_json ? "" : "no image"));
    await run("images edit",
      async () => c.images.edit({ model: "image", prompt: "Add a second lighthouse.",
        image: await toFile(Buffer.from("\x89PNG\r\n\x1a\n-test-image"), "in.png", { type: "image/png" }) }),
      (r) => (r.data?.[0]?.b64_json ? "" : "no image"));
    await run("audio transcription",
      async () => c.audio.transcriptions.create({ model: "transcribe", file: await toFile(audio, "talk.wav", { type: "audio/wav" }) }),
      (r) => (r.text?.includes(`(${audio.length} bytes, sha256 ${audioSum})`) ? "" : r.text));
    await run("audio speech",
      async () => Buffer.from(await (await c.audio.speech.create({ model: "speech", input: "Two regions, one gateway.", voice: "alloy" })).arrayBuffer()),
      (b) => (b.subarray(0, 3).toString() === "ID3" ? "" : "not audio"));
    await run("models list", () => c.models.list(),
      (page) => (page.data.map((m) => m.id).join(",") === "chat,image,speech,transcribe" ? "" : JSON.stringify(page.data)));

    if (phase === "throttled" && process.env.OLD_RESPONSE_ID) {
      const old = process.env.OLD_RESPONSE_ID;
      await run("responses turn on the throttled owner's response",
        () => c.responses.create({ model: "chat", input: "Still there?", previous_response_id: old }));
      await run("responses get on the throttled account", () => c.responses.retrieve(old), (r) => (r.id === old ? "" : "another id"));
      await run("files get on the throttled account", () => c.files.retrieve(process.env.OLD_FILE_ID),
        (r) => (r.id === process.env.OLD_FILE_ID ? "" : "another id"));
      // Deletes, on both accounts: what was made now (frc) and, by the last client, before (swc).
      const doomed = [[file.id, conv.id, ""]];
      if (flavour === "v1") doomed.push([process.env.OLD_FILE_ID, process.env.OLD_CONVERSATION_ID, " on the throttled account"]);
      for (const [fileID, convID, where] of doomed) {
        await run(`files delete${where}`, () => c.files.delete(fileID), (r) => (r.deleted && r.id === fileID ? "" : JSON.stringify(r)));
        await run(`files get after delete${where}`, () => c.files.retrieve(fileID));
        await run(`conversations delete${where}`, () => c.conversations.delete(convID), (r) => (r.deleted ? "" : JSON.stringify(r)));
      }
    }
  }
  console.log(JSON.stringify({ calls, ...made }));
}

(process.env.MODE === "api" ? apiMain() : main()).catch((err) => {
  console.error(`sdk client failed: ${err?.status ?? ""} ${err?.message ?? err}`);
  process.exit(1);
});
