package main

import "syscall"

// stopWithParent has the child sent SIGTERM when the demo exits, however it exits.
func stopWithParent(a *syscall.SysProcAttr) { a.Pdeathsig = syscall.SIGTERM }
