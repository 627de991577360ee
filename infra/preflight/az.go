package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// Azure runs Azure CLI queries. The pre-flight only reads: every command it runs is a show,
// list or GET.
type Azure interface {
	// JSON runs `az ARGS -o json` and decodes its output into into.
	JSON(ctx context.Context, into any, args ...string) error
}

// CLI is Azure through the az command, each call bounded by Timeout.
type CLI struct {
	Path    string        // "az"
	Timeout time.Duration // per call
}

// AzError is a failed az call.
type AzError struct {
	Args     []string
	Stderr   string
	TimedOut bool
	Limit    time.Duration
	Err      error
}

func (e *AzError) Error() string {
	cmd := "az " + strings.Join(e.Args, " ")
	if e.TimedOut {
		return fmt.Sprintf("%s gave no answer in %d s and was stopped", cmd, int(e.Limit.Seconds()))
	}
	msg := firstLine(e.Stderr)
	if msg == "" {
		msg = e.Err.Error()
	}
	return fmt.Sprintf("%s: %s", cmd, msg)
}

// NotFound says whether Azure answered that the thing asked about does not exist.
func (e *AzError) NotFound() bool {
	s := strings.ToLower(e.Stderr)
	return strings.Contains(s, "notfound") || strings.Contains(s, "could not be found") || strings.Contains(s, "was not found")
}

func (c CLI) JSON(ctx context.Context, into any, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	full := append(append([]string{}, args...), "-o", "json", "--only-show-errors")
	cmd := exec.CommandContext(ctx, c.Path, full...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// az is a wrapper script around Python on every platform: a timeout must end the whole
	// process group, and output still held open by a child must not keep us waiting.
	ownProcessGroup(cmd)
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if err != nil {
		return &AzError{Args: args, Stderr: stderr.String(), TimedOut: ctx.Err() != nil, Limit: c.Timeout, Err: err}
	}
	out := bytes.TrimSpace(stdout.Bytes())
	if len(out) == 0 {
		out = []byte("null")
	}
	if err := json.Unmarshal(out, into); err != nil {
		return &AzError{Args: args, Err: fmt.Errorf("unexpected output: %w", err)}
	}
	return nil
}

func firstLine(s string) string {
	for _, l := range strings.Split(s, "\n") {
		l = strings.TrimSpace(l)
		l = strings.TrimPrefix(l, "ERROR: ")
		if l != "" {
			return l
		}
	}
	return ""
}

// notFound reports whether err is Azure saying the thing does not exist.
func notFound(err error) bool {
	var ae *AzError
	return errors.As(err, &ae) && ae.NotFound()
}
