//go:build unix

package main

import (
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"unsafe"
)

// ownForeground makes this program the terminal's foreground process group, so that Ctrl-C
// reaches it alone, and returns what gives the terminal back.
//
// Ctrl-C interrupts the terminal's whole foreground process group. Started by `go run`, that
// group holds the go command too, which then exits 1 once its program has finished, whatever the
// program's own status (golang/go#40467): the demo's summary and exit 0 would be lost. In a group
// of its own, in the foreground, this program gets Ctrl-C and the go command does not. Nothing is
// done when standard input is not the terminal's foreground (a pipe, a test, a background job).
func ownForeground() (restore func()) {
	fd := int(os.Stdin.Fd())
	was, err := tcgetpgrp(fd)
	if err != nil || was != syscall.Getpgrp() || was == syscall.Getpid() {
		return func() {} // not a terminal, not in its foreground, or already a group of its own
	}
	if syscall.Setpgid(0, 0) != nil {
		return func() {}
	}
	// Taking (and giving back) the terminal from outside its foreground group raises SIGTTOU.
	signal.Ignore(syscall.SIGTTOU)
	if tcsetpgrp(fd, syscall.Getpid()) != nil {
		_ = syscall.Setpgid(0, was)
		signal.Reset(syscall.SIGTTOU)
		return func() {}
	}
	return func() {
		_ = tcsetpgrp(fd, was)
		signal.Reset(syscall.SIGTTOU)
	}
}

func tcgetpgrp(fd int) (int, error) {
	var pgrp int32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), uintptr(syscall.TIOCGPGRP), uintptr(unsafe.Pointer(&pgrp))); e != 0 {
		return 0, e
	}
	return int(pgrp), nil
}

func tcsetpgrp(fd, pgrp int) error {
	p := int32(pgrp)
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), uintptr(syscall.TIOCSPGRP), uintptr(unsafe.Pointer(&p))); e != 0 {
		return e
	}
	return nil
}

// ownGroup starts cmd in a process group of its own, so that Ctrl-C in the terminal does not
// reach it: the demo stops the gateway itself, after the summary. Where the system can (Linux),
// cmd is also stopped should the demo die without doing so.
func ownGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stopWithParent(cmd.SysProcAttr)
}
