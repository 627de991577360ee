// Command pack builds the Functions deployment package: the handler built for linux/amd64 with
// CGO_ENABLED=0, host.json and function/function.json, in a zip whose binary keeps its
// executable bit (a zip made with the wrong tool loses it, and the host then cannot start the
// handler) at the path host.json's defaultExecutablePath names. It is what deploy.sh deploys.
// With -stage it also lays the same files out in a folder, from which
// `func azure functionapp publish APP` publishes.
//
//	go run ./infra/pack -o dist/gateway.zip [-stage dist/app]
package main

import (
	"archive/zip"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"time"
)

func main() {
	out := flag.String("o", filepath.Join("dist", "gateway.zip"), "zip to write")
	stage := flag.String("stage", "", "also write the package's files into this folder (for func azure functionapp publish)")
	root := flag.String("root", ".", "repository root")
	flag.Parse()
	if err := pack(*root, *out, *stage); err != nil {
		fmt.Fprintln(os.Stderr, "pack:", err)
		os.Exit(1)
	}
	fmt.Println(*out)
}

// entryTime is every zip entry's modification time.
var entryTime = time.Date(2026, time.January, 1, 0, 0, 0, 0, time.UTC)

type entry struct {
	src, name string
	mode      os.FileMode
}

// executablePath reads where the Functions host looks for the handler.
func executablePath(root string) (string, error) {
	b, err := os.ReadFile(filepath.Join(root, "host.json"))
	if err != nil {
		return "", err
	}
	var host struct {
		CustomHandler struct {
			Description struct {
				DefaultExecutablePath string `json:"defaultExecutablePath"`
			} `json:"description"`
		} `json:"customHandler"`
	}
	if err := json.Unmarshal(b, &host); err != nil {
		return "", fmt.Errorf("host.json: %w", err)
	}
	p := path.Clean(host.CustomHandler.Description.DefaultExecutablePath)
	if p == "." || path.IsAbs(p) || p == ".." || len(p) > 2 && p[:3] == "../" {
		return "", fmt.Errorf("host.json: customHandler.description.defaultExecutablePath %q is not a path inside the app", p)
	}
	return p, nil
}

func pack(root, out, stage string) error {
	exe, err := executablePath(root)
	if err != nil {
		return err
	}
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
	entries := []entry{
		{filepath.Join(root, "host.json"), "host.json", 0o644},
		{filepath.Join(root, "function", "function.json"), "function/function.json", 0o644},
		{bin, exe, 0o755},
	}
	if err := writeZip(out, entries); err != nil {
		return err
	}
	if stage != "" {
		return writeFolder(stage, entries)
	}
	return nil
}

func writeZip(out string, entries []entry) error {
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	zw := zip.NewWriter(f)
	for _, e := range entries {
		if err := addToZip(zw, e); err != nil {
			return err
		}
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return f.Close()
}

func addToZip(zw *zip.Writer, e entry) error {
	in, err := os.Open(e.src)
	if err != nil {
		return err
	}
	defer in.Close()
	// A fixed, valid date: a zero one is stored as MS-DOS date 0 (month 0, day 0), which unzip
	// tools reject or show as 1979/1980, and a fixed one keeps the package the same bytes for
	// the same build.
	h := &zip.FileHeader{Name: e.name, Method: zip.Deflate, Modified: entryTime}
	h.SetMode(e.mode) // stored as Unix mode bits, which the Functions host's unzip honours
	w, err := zw.CreateHeader(h)
	if err != nil {
		return err
	}
	_, err = io.Copy(w, in)
	return err
}

func writeFolder(stage string, entries []entry) error {
	for _, e := range entries {
		dst := filepath.Join(stage, filepath.FromSlash(e.name))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		b, err := os.ReadFile(e.src)
		if err != nil {
			return err
		}
		if err := os.WriteFile(dst, b, e.mode); err != nil {
			return err
		}
		if err := os.Chmod(dst, e.mode); err != nil { // WriteFile keeps an existing file's mode
			return err
		}
	}
	return nil
}
