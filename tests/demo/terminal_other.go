//go:build !unix

package main

import "os/exec"

// ownForeground: only Unix terminals have process groups to arrange.
func ownForeground() (restore func()) { return func() {} }

func ownGroup(*exec.Cmd) {}
