//go:build !unix

package main

import "os/exec"

// ownProcessGroup: elsewhere cancelling ends the az process itself (deploy.sh needs a Unix
// shell anyway).
func ownProcessGroup(cmd *exec.Cmd) {}
