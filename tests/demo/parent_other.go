//go:build unix && !linux

package main

import "syscall"

// stopWithParent: only Linux tells a child that its parent died.
func stopWithParent(*syscall.SysProcAttr) {}
