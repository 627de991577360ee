// Command pack builds the Functions deployment package: the handler built for linux/amd64 with
// CGO_ENABLED=0, host.json and function/function.json, in a zip whose binary keeps its
// executable bit (a zip made with the wrong tool loses it, and the host then cannot start the
// handler). It is what deploy.sh deploys and what `func azure functionapp publish` needs.
//
//	go run ./infra/pack -o dist/gateway.zip
package main

import (
	"archive/zip"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
)

func main() {
	out := flag.String("o", filepath.Join("dist", "gateway.zip"), "zip to write")
	root := flag.String("root", ".", "repository root")
	flag.Parse()
	if err := pack(*root, *out); err != nil {
		fmt.Fprintln(os.Stderr, "pack:", err)
		os.Exit(1)
	}
	fmt.Println(*out)
}

func pack(root, out string) error {
	dir, err := os.MkdirTemp("", "gateway-pack-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "handler")
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "./handler")
	build.Dir = root
	build.Env = append(os.Environ(), "GOOS=linux", "GOARCH=amd64", "CGO_ENABLED=0")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("build the handler: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	zw := zip.NewWriter(f)
	for _, e := range []struct {
		src, name string
		mode      os.FileMode
	}{
		{filepath.Join(root, "host.json"), "host.json", 0o644},
		{filepath.Join(root, "function", "function.json"), "function/function.json", 0o644},
		{bin, "bin/handler", 0o755}, // the path host.json's defaultExecutablePath names
	} {
		if err := add(zw, e.src, e.name, e.mode); err != nil {
			return err
		}
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return f.Close()
}

func add(zw *zip.Writer, src, name string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	h := &zip.FileHeader{Name: name, Method: zip.Deflate}
	h.SetMode(mode) // stored as Unix mode bits, which the Functions host's unzip honours
	w, err := zw.CreateHeader(h)
	if err != nil {
		return err
	}
	_, err = io.Copy(w, in)
	return err
}
