// The official OpenAI Node SDK's Realtime client (openai/realtime/ws, on the `ws` package),
// unmodified, opening a session through the gateway as if it were Azure OpenAI. The SDK only
// speaks wss:, so GATEWAY_URL is a TLS front (the test's stand-in for Front Door) whose CA is in
// NODE_EXTRA_CA_CERTS. Prints one JSON line with what it saw; exits 1 on any failure. Used by
// tests/e2e/realtime_test.go.
import { AzureOpenAI } from "openai";
import { OpenAIRealtimeWS } from "openai/realtime/ws";

const client = new AzureOpenAI({
  endpoint: process.env.GATEWAY_URL,
  apiKey: process.env.GATEWAY_API_KEY,
  apiVersion: "2025-04-01-preview",
  deployment: process.env.DEPLOYMENT,
});

async function main() {
  const out = { events: [] };
  const rt = await OpenAIRealtimeWS.azure(client, { deploymentName: process.env.DEPLOYMENT });
  rt.socket.on("upgrade", (res) => {
    out.servedBy = res.headers["x-served-by"];
    out.attempts = res.headers["x-gateway-attempts"];
  });
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no response.done within 10s")), 10000);
    rt.on("error", (err) => { clearTimeout(timer); reject(err); });
    rt.on("event", (event) => {
      out.events.push(event.type);
      if (event.type === "session.created") {
        rt.send({ type: "session.update", session: { type: "realtime", instructions: "Be brief." } });
        rt.send({ type: "response.create" });
      }
      if (event.type === "response.done") {
        out.text = event.response?.output?.[0]?.content?.[0]?.text ?? null;
        clearTimeout(timer);
        resolve();
      }
    });
  });
  const closed = new Promise((resolve) => rt.socket.on("close", (code) => resolve(code)));
  rt.close({ code: 1000, reason: "done" });
  out.closeCode = await closed;
  console.log(JSON.stringify(out));
}

main().catch((err) => {
  console.error(err?.stack ?? String(err));
  process.exit(1);
});
