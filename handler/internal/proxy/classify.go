package proxy

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/aoai-failover/gateway/handler/internal/config"
	"github.com/aoai-failover/gateway/handler/internal/state"
)

// result is what one attempt produced, before it is judged.
type result struct {
	status int         // the backend's status; 0 when no answer came
	header http.Header // the backend's response headers
	err    error       // why no answer (or no usable start of one) came
	cause  error       // why the attempt's context ended, when it did: a stage timeout
	sent   http.Header // the request's headers as sent, credential included

	callerGone        bool // the caller left during the attempt
	pinned            bool // the request can be served by this target's account alone
	noCredential      bool // the target had no credential to call it with
	deploymentMissing bool // a 404 whose body says the deployment does not exist
}

// verdict is what the forwarder does after an attempt.
type verdict int

const (
	next   verdict = iota // try the next target
	commit                // send this answer to the caller
	stop                  // the caller left: no more targets, nothing to write
)

// outcome is the judgement of one attempt: what the forwarder does next and what the attempt
// says about the target.
type outcome struct {
	verdict    verdict
	kind       state.Kind
	reason     string
	wait       time.Duration // Throttled: how long the target is unavailable
	waitSource string        // which header (or default) the wait came from
	timeout    bool          // a wait ran out
	// notFound: the target answered 404 for the path itself, not for a missing deployment.
	notFound bool
	// noCredential: the target had no credential yet.
	noCredential bool
	// unauthorized: a 401, which a key rotated in Key Vault since it was read may explain.
	unauthorized bool
	// retryWithNewKey: the same target is worth one more try with the key just read.
	retryWithNewKey bool
}

// keyRotated replaces an unauthorized outcome when the account's key has changed since it was
// sent: nothing is held against the target and it is tried once more.
var keyRotated = outcome{verdict: next, kind: state.Abandoned, retryWithNewKey: true,
	reason: "401: the key was rotated; trying again with the new one"}

// classify judges an attempt by the failover rules (handler/README.md, "Failover rules"). It is
// pure: it reads the result and the clock it is given, and changes nothing.
func classify(r result, now time.Time, th config.Throttle) outcome {
	switch {
	case r.callerGone:
		return outcome{verdict: stop, kind: state.Abandoned, reason: "the caller went away"}
	case r.noCredential:
		// Not the target's fault (Key Vault not read yet, no token): hold nothing against it.
		return outcome{verdict: next, kind: state.Abandoned, noCredential: true, reason: "no credential yet"}
	case r.err != nil:
		return classifyError(r.err, r.cause)
	}
	switch code := r.status; {
	case code == http.StatusTooManyRequests:
		wait, source := state.RetryAfter(r.header, now, th.DefaultRetryAfter.D(), th.MaxRetryAfter.D())
		return outcome{verdict: next, kind: state.Throttled, wait: wait, waitSource: source,
			reason: "throttled for " + wait.Round(time.Millisecond).String()}
	case code < 200:
		// 100 Continue never gets here (the transport reads past it); a 101 or any other 1xx
		// means the backend is not answering this request.
		return outcome{verdict: next, kind: state.Failed, reason: "the backend answered " + http.StatusText(code) + " instead of a response"}
	case code == http.StatusRequestTimeout || code >= 500:
		return outcome{verdict: next, kind: state.Failed, reason: http.StatusText(code)}
	case code == http.StatusNotFound && r.pinned && !r.deploymentMissing:
		// The account that holds the state says the id (or the path) does not exist: no
		// other account could say better, so the caller has the answer.
		return outcome{verdict: commit, kind: state.Succeeded}
	case code == http.StatusNotFound && !r.deploymentMissing:
		// Azure's generic "Resource not found" means the path or api-version does not exist
		// there: the next target may know it, but it says nothing against this target, and
		// one caller's bad path must not take a target away from everyone else.
		return outcome{verdict: next, kind: state.Succeeded, notFound: true, reason: "404 Resource not found for this path"}
	case code == http.StatusUnauthorized:
		return outcome{verdict: next, kind: state.Misconfigured, unauthorized: true,
			reason: http.StatusText(code) + ": check this target's key and deployment name"}
	case code == http.StatusForbidden || code == http.StatusNotFound:
		return outcome{verdict: next, kind: state.Misconfigured, reason: http.StatusText(code) + ": check this target's key and deployment name"}
	}
	// A success, or a 4xx that is the caller's problem: either way the caller's answer.
	return outcome{verdict: commit, kind: state.Succeeded}
}

// classifyError judges an attempt that ended without a usable answer: timeouts by the wait that
// ran out, anything else as a connection failure.
func classifyError(err, cause error) outcome {
	switch {
	case errors.Is(cause, errRequestDeadline):
		return outcome{verdict: next, kind: state.Failed, timeout: true, reason: "the request's deadline passed"}
	case errors.Is(cause, errHeaderTimeout), errors.Is(cause, errFirstEventTimeout), errors.Is(cause, errIdleTimeout):
		return outcome{verdict: next, kind: state.Failed, timeout: true, reason: cause.Error()}
	}
	var info informationalError
	if errors.As(err, &info) {
		return outcome{verdict: next, kind: state.Failed, reason: info.Error()}
	}
	if errors.Is(err, errBadEvent) || errors.Is(err, errEventTooLarge) || errors.Is(err, errEmptyStream) {
		return outcome{verdict: next, kind: state.Failed, reason: err.Error()}
	}
	return outcome{verdict: next, kind: state.Failed, reason: "connection failed: " + shortError(err)}
}

// shortError strips the method and URL that net/http puts before its errors, keeping the cause.
func shortError(err error) string {
	var ue interface{ Unwrap() error }
	if errors.As(err, &ue) && strings.HasPrefix(err.Error(), "Post ") {
		if inner := ue.Unwrap(); inner != nil {
			return inner.Error()
		}
	}
	return err.Error()
}
