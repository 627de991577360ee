package e2e

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/azure"
	"github.com/openai/openai-go/v3/option"

	"github.com/aoai-failover/gateway/tests/aoaisim"
)

func goClient(gatewayURL string) openai.Client {
	return openai.NewClient(
		azure.WithEndpoint(gatewayURL, "2024-10-21"),
		azure.WithAPIKey(callerKey),
		azure.WithUnsafeAllowHTTP(), // the test gateway listens on plain loopback HTTP
		option.WithMaxRetries(0),    // failover is the gateway's job, not the SDK's
	)
}

func TestGoSDKThroughGateway(t *testing.T) {
	gw, swc, frc := throttledPrimary(t)
	client := goClient(gw.URL)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	params := openai.ChatCompletionNewParams{
		Model:     "chat",
		Messages:  []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say hello to the gateway tests.")},
		MaxTokens: openai.Int(20),
	}

	var resp *http.Response
	c, err := client.Chat.Completions.New(ctx, params, option.WithResponseInto(&resp))
	if err != nil {
		t.Fatalf("non-streaming: %v", err)
	}
	if len(c.Choices) != 1 || c.Choices[0].Message.Content == "" || c.Choices[0].FinishReason == "" || c.Usage.TotalTokens == 0 {
		t.Errorf("incomplete answer: %+v", c)
	}
	if by := resp.Header.Get("x-served-by"); by != "frc/big" {
		t.Errorf("non-streaming served by %q", by)
	}

	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	var sresp *http.Response
	stream := client.Chat.Completions.NewStreaming(ctx, params, option.WithResponseInto(&sresp))
	acc := openai.ChatCompletionAccumulator{}
	for stream.Next() {
		acc.AddChunk(stream.Current())
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	if len(acc.Choices) != 1 || len(strings.Fields(acc.Choices[0].Message.Content)) != 12 || acc.Choices[0].FinishReason != "stop" || acc.Usage.TotalTokens == 0 {
		t.Errorf("incomplete stream: %+v", acc.ChatCompletion)
	}
	if by := sresp.Header.Get("x-served-by"); by != "frc/big" {
		t.Errorf("stream served by %q", by)
	}
	if st := swc.Sim.Stats()["micro"]; st.Throttled < 1 || st.Served != 0 {
		t.Errorf("primary %+v", st)
	}
	if st := frc.Sim.Stats()["big"]; st.Served != 2 || st.LastAuth != "api-key" {
		t.Errorf("secondary %+v", st)
	}
}

// TestGoSDKSeesABrokenStream: a stream cut after the gateway committed it must reach the SDK as
// an error, never as a shorter answer that looks complete.
func TestGoSDKSeesABrokenStream(t *testing.T) {
	swc := startRegion(t, "swc", map[string]aoaisim.Deployment{"micro": {Model: "m", Fault: "cut"}})
	regions := map[string]*region{"swc": swc}
	doc := newRouting().account("swc", swc).target("chat", "swc", "micro", 1)
	gw := startGateway(t, doc.env(regions), doc.secrets(regions)...)

	client := goClient(gw.URL)
	stream := client.Chat.Completions.NewStreaming(context.Background(), openai.ChatCompletionNewParams{
		Model:    "chat",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
	})
	n := 0
	for stream.Next() {
		n++
	}
	err := stream.Err()
	if err == nil {
		t.Fatalf("a cut stream ended without an error after %d chunks", n)
	}
	if !strings.Contains(err.Error(), "StreamInterrupted") && !strings.Contains(err.Error(), "incomplete") {
		t.Errorf("error does not say the stream broke: %v", err)
	}
}
