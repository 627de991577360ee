package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/azure"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"

	"github.com/aoai-failover/gateway/tests/azurite"
)

// TestConversation is the headline of issue 15's Proof: two multi-turn Responses
// conversations, each turn naming the previous response, across three gateway instances that
// share state through Table Storage (Azurite), turn i on instance i%3, over two accounts whose
// owners are throttled between turns. Conversation A starts on swc (the first target);
// conversation B starts while swc is throttled, so on frc, and must stay there when swc is
// free again, whatever the preference order. Every turn completes 200 on its owner; while the
// owner itself is throttled the gateway answers 429 StateOwnerThrottled with retry-after, and
// the turn is retried after that wait; no backend ever answers previous_response_not_found.
// Then ids the gateway never saw (made directly on an account) are found by its GET look-up.
func TestConversation(t *testing.T) {
	az := azurite.Start(t)
	s := newAPISetup(t)
	env := map[string]string{"GATEWAY_STATE_STORAGE": az.ConnectionString, "GATEWAY_STATE_TABLE": "conversation"}
	var gws []*gatewayProc
	for i := 0; i < 3; i++ {
		gws = append(gws, s.start(t, env))
	}
	// Instance i's client: the plain v1 client (a Bearer client key) on instances 0 and 2, the
	// azure one (api-key, /openai/responses?api-version=) on 1.
	type instance struct {
		c   openai.Client
		rec *sdkRecorder
	}
	var inst []instance
	for i, gw := range gws {
		rec := &sdkRecorder{name: fmt.Sprintf("gw%d", i)}
		c := openai.NewClient(option.WithBaseURL(gw.URL+"/openai/v1/"), option.WithAPIKey(s.keyV1), option.WithMaxRetries(0), option.WithMiddleware(rec.middleware))
		if i == 1 {
			c = openai.NewClient(azure.WithEndpoint(gw.URL, apiVersion), azure.WithAPIKey(s.keyAzure), azure.WithUnsafeAllowHTTP(),
				option.WithMaxRetries(0), option.WithMiddleware(rec.middleware))
		}
		inst = append(inst, instance{c, rec})
	}
	micro, big := apiTargets["chat"]["swc"], apiTargets["chat"]["frc"]
	targetOf := map[string]string{"swc": "swc/" + micro, "frc": "frc/" + big}

	type conversation struct {
		name    string
		owner   string // the account that holds it, learned from its first turn
		last    string // the last response's id
		turns   int
		waits   int // 429 StateOwnerThrottled answers waited out
		history []string
	}
	// turn sends the next turn of conv to instance turns%3, waiting out StateOwnerThrottled.
	turn := func(conv *conversation) {
		t.Helper()
		i := conv.turns % 3
		in := inst[i]
		stream := conv.turns%2 == 1
		params := responses.ResponseNewParams{Model: "chat", Input: responses.ResponseNewParamsInputUnion{OfString: openai.String(fmt.Sprintf("%s, turn %d.", conv.name, conv.turns))}}
		if conv.last != "" {
			params.PreviousResponseID = openai.String(conv.last)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for attempt := 0; ; attempt++ {
			var id string
			var err error
			if stream {
				st := in.c.Responses.NewStreaming(ctx, params)
				for st.Next() {
					if ev := st.Current(); ev.Type == "response.created" {
						id = ev.Response.ID
					}
				}
				err = st.Err()
			} else {
				var r *responses.Response
				if r, err = in.c.Responses.New(ctx, params); err == nil {
					id = r.ID
					if r.PreviousResponseID != conv.last {
						t.Errorf("%s turn %d: previous_response_id %q, want %q", conv.name, conv.turns, r.PreviousResponseID, conv.last)
					}
				}
			}
			ex := in.rec.last()
			what := fmt.Sprintf("%s turn %d on instance %d (attempt %d)", conv.name, conv.turns, i, attempt+1)
			var e *openai.Error
			switch {
			case err == nil:
				served := ex.header.Get("x-served-by")
				if conv.owner == "" {
					conv.owner, _, _ = strings.Cut(served, "/")
				}
				s.check(t, what, ex, expect{status: 200, servedBy: targetOf[conv.owner], logical: "chat", v1: true})
				conv.history = append(conv.history, fmt.Sprintf("%d:gw%d:%s", conv.turns, i, served))
				conv.last = id
				conv.turns++
				return
			case errors.As(err, &e) && e.StatusCode == 429 && e.Code == "StateOwnerThrottled":
				ms, _ := strconv.Atoi(ex.header.Get("retry-after-ms"))
				if ex.header.Get("retry-after") == "" || ms <= 0 || !strings.Contains(e.Message, conv.last) || !strings.Contains(e.Message, `"`+conv.owner+`"`) {
					t.Errorf("%s: StateOwnerThrottled without its wait or reason: retry-after %q, retry-after-ms %q: %s",
						what, ex.header.Get("retry-after"), ex.header.Get("retry-after-ms"), e.Message)
				}
				s.check(t, what, ex, expect{status: 429, servedBy: "none"})
				conv.waits++
				conv.history = append(conv.history, fmt.Sprintf("%d:gw%d:429 %dms", conv.turns, i, ms))
				if attempt >= 8 {
					t.Fatalf("%s: still throttled after %d waits", what, attempt+1)
				}
				time.Sleep(time.Duration(ms)*time.Millisecond + 50*time.Millisecond)
			default:
				if errors.As(err, &e) && e.Code == "previous_response_not_found" {
					t.Fatalf("%s: previous_response_not_found: the turn reached an account that does not hold %s (x-served-by %s): %v",
						what, conv.last, ex.header.Get("x-served-by"), err)
				}
				t.Fatalf("%s: %v (x-served-by %q, x-gateway-attempts %q)", what, err, ex.header.Get("x-served-by"), ex.header.Get("x-gateway-attempts"))
			}
		}
	}

	a, b := &conversation{name: "A"}, &conversation{name: "B"}
	turn(a) // A0 on swc, the first target
	s.swc.Sim.Throttle(micro, 2*time.Second)
	turn(b) // B0: swc refuses, so frc
	if a.owner != "swc" || b.owner != "frc" {
		t.Fatalf("conversation A started on %q, B on %q; want swc and frc", a.owner, b.owner)
	}
	turn(a) // A1 waits for swc
	turn(b) // B1: swc is free again, but B lives on frc
	turn(a)
	turn(b)
	s.frc.Sim.Throttle(big, time.Second)
	turn(b) // B3 waits for frc
	turn(a)
	s.swc.Sim.Throttle(micro, time.Second)
	turn(a) // A4 waits for swc
	turn(b)
	for a.turns < 8 {
		turn(a)
		turn(b)
	}
	t.Logf("A: %v", a.history)
	t.Logf("B: %v", b.history)
	if a.waits < 2 || b.waits < 1 {
		t.Errorf("StateOwnerThrottled waits: A %d, B %d; want at least 2 and 1 (A's owner was throttled twice, B's once)", a.waits, b.waits)
	}
	// No backend was ever asked to build on state it does not hold.
	lookups := 0
	for name, r := range s.regions {
		for _, rec := range r.Sim.Records() {
			if rec.Status == http.StatusBadRequest {
				t.Errorf("%s answered 400 to %s %s: %s", name, rec.Method, rec.Path, rec.Response)
			}
			if rec.RequestHeader.Get("X-Test-Call") == "" && rec.Method == http.MethodGet {
				lookups++
			}
			if rec.APIKey != r.Key || rec.Authorization != "" {
				t.Errorf("%s got %s %s with another credential", name, rec.Method, rec.Path)
			}
		}
	}
	t.Logf("owner look-ups by GET on the accounts (ids not yet in the shared table): %d", lookups)

	t.Run("ids made directly on an account", func(t *testing.T) {
		// A response and a conversation made on frc before the gateway was in front of it.
		direct := func(path, body string) string {
			req, _ := http.NewRequest("POST", s.frc.Srv.URL+path, strings.NewReader(body))
			req.Header.Set("api-key", s.frc.Key)
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var v struct{ ID string }
			b, _ := io.ReadAll(resp.Body)
			if json.Unmarshal(b, &v); resp.StatusCode != 200 || v.ID == "" {
				t.Fatalf("%s on frc: %d %s", path, resp.StatusCode, b)
			}
			return v.ID
		}
		respID := direct("/openai/v1/responses", `{"model":"`+big+`","input":"Made before the gateway."}`)
		convID := direct("/openai/v1/conversations", `{}`)
		ctx := context.Background()
		got, err := inst[2].c.Responses.Get(ctx, respID, responses.ResponseGetParams{})
		ex := inst[2].rec.last()
		if err != nil || got.ID != respID {
			t.Fatalf("GET of a response only frc holds: %v", err)
		}
		s.check(t, "GET of an unknown id", ex, expect{status: 200, servedBy: "frc"})
		// The gateway found it with a GET of its own (no X-Test-Call), answered 200 by frc.
		found := false
		for _, rec := range s.frc.Sim.Records() {
			if rec.RequestHeader.Get("X-Test-Call") == "" && rec.Method == http.MethodGet && strings.HasSuffix(rec.Path, "/responses/"+respID) && rec.Status == 200 && rec.APIKey == s.frc.Key {
				found = true
			}
		}
		if !found {
			t.Errorf("no GET look-up of %s reached frc", respID)
		}
		// A turn on it, on another instance: to frc, although swc is first and free.
		r, err := inst[0].c.Responses.New(ctx, responses.ResponseNewParams{Model: "chat", Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("Go on.")},
			PreviousResponseID: openai.String(respID)})
		if err != nil || r.PreviousResponseID != respID {
			t.Fatalf("turn on a response made on frc: %v", err)
		}
		s.check(t, "turn on an unknown id", inst[0].rec.last(), expect{status: 200, servedBy: "frc/" + big, logical: "chat", v1: true})
		// A conversation made on frc, named by a turn on the third instance: found and served there.
		r, err = inst[1].c.Responses.New(ctx, responses.ResponseNewParams{Model: "chat", Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("Hello.")},
			Conversation: responses.ResponseNewParamsConversationUnion{OfString: openai.String(convID)}})
		if err != nil || r.Conversation.ID != convID {
			t.Fatalf("turn in a conversation made on frc: %v", err)
		}
		s.check(t, "turn in an unknown conversation", inst[1].rec.last(), expect{status: 200, servedBy: "frc/" + big, logical: "chat", v1: true})
		// An id no account holds: a call on it is the gateway's 404; a turn naming it goes where
		// it would anyway, and that account says it does not exist.
		_, err = inst[2].c.Responses.Get(ctx, "resp_0000000000000000000000000000000000000000000nobody", responses.ResponseGetParams{})
		var e *openai.Error
		if !errors.As(err, &e) || e.StatusCode != 404 || e.Code != "NotFound" {
			t.Errorf("GET of an id nobody holds: %v", err)
		}
		s.check(t, "GET of an id nobody holds", inst[2].rec.last(), expect{status: 404, servedBy: "none"})
		_, err = inst[0].c.Responses.New(ctx, responses.ResponseNewParams{Model: "chat", Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("x")},
			PreviousResponseID: openai.String("resp_0000000000000000000000000000000000000000000nobody")})
		if !errors.As(err, &e) || e.StatusCode != 400 || e.Code != "previous_response_not_found" {
			t.Errorf("a turn on an id nobody holds: %v", err)
		}
		ex = inst[0].rec.last()
		if !bytes.Contains(ex.body.Bytes(), []byte("previous_response_not_found")) || ex.header.Get("x-served-by") != "swc/"+micro {
			t.Errorf("a turn on an id nobody holds: %s from %s", ex.body, ex.header.Get("x-served-by"))
		}
	})
}
