package main

import (
	"fmt"
	"os"
	"testing"

	"github.com/aoai-failover/gateway/tests/azurite"
)

// azuriteTB lets a program use tests/azurite, written for tests: it stands in for testing.TB
// with the few methods azurite calls (a failure or a skip becomes an error, cleanups run at
// close). The embedded interface is nil; azurite calls nothing else.
type azuriteTB struct {
	testing.TB
	cleanups []func()
	dirs     []string
}

type tbFailure struct{ msg string }

func (t *azuriteTB) Helper()                   {}
func (t *azuriteTB) Fatal(a ...any)            { panic(tbFailure{fmt.Sprint(a...)}) }
func (t *azuriteTB) Fatalf(f string, a ...any) { panic(tbFailure{fmt.Sprintf(f, a...)}) }
func (t *azuriteTB) Skip(a ...any)             { panic(tbFailure{fmt.Sprint(a...)}) }
func (t *azuriteTB) Cleanup(f func())          { t.cleanups = append(t.cleanups, f) }

func (t *azuriteTB) TempDir() string {
	d, err := os.MkdirTemp("", "fleetbench-azurite-")
	if err != nil {
		t.Fatal(err)
	}
	t.dirs = append(t.dirs, d)
	return d
}

func (t *azuriteTB) close() {
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
	for _, d := range t.dirs {
		os.RemoveAll(d)
	}
}

// startAzurite starts Azurite's Table service (tests/node's, installed by `npm ci` there) and
// returns it with the function that stops it.
func startAzurite() (tbl *azurite.Table, stop func(), err error) {
	t := &azuriteTB{}
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(tbFailure)
			if !ok {
				panic(r)
			}
			t.close()
			tbl, stop, err = nil, nil, fmt.Errorf("azurite: %s", f.msg)
		}
	}()
	tbl = azurite.Start(t)
	return tbl, t.close, nil
}
