package main

import (
	"archive/zip"
	"bytes"
	"debug/elf"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

func TestPack(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the handler")
	}
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	out := filepath.Join(t.TempDir(), "gateway.zip")
	stage := filepath.Join(t.TempDir(), "app")
	if err := pack(root, out, stage); err != nil {
		t.Fatal(err)
	}
	exe, err := executablePath(root)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := os.Stat(filepath.Join(stage, filepath.FromSlash(exe))); err != nil || info.Mode().Perm()&0o111 == 0 {
		t.Errorf("the staged folder has no executable %s: %v", exe, err)
	}
	for _, name := range []string{"host.json", "function/function.json"} {
		if _, err := os.Stat(filepath.Join(stage, name)); err != nil {
			t.Errorf("the staged folder lacks %s", name)
		}
	}
	zr, err := zip.OpenReader(out)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	seen := map[string]*zip.File{}
	for _, f := range zr.File {
		seen[f.Name] = f
	}
	for _, name := range []string{"host.json", "function/function.json", exe} {
		if seen[name] == nil {
			t.Fatalf("%s missing from the package (has %v)", name, len(seen))
		}
	}
	if len(seen) != 3 {
		t.Errorf("unexpected entries: %v", seen)
	}
	for name, f := range seen {
		// MS-DOS date: bits 15-9 years since 1980, 8-5 month, 4-0 day.
		month, day := f.ModifiedDate>>5&0xf, f.ModifiedDate&0x1f
		if month < 1 || month > 12 || day < 1 || !f.Modified.Equal(entryTime) {
			t.Errorf("%s: modified %v (MS-DOS date %#x): want the fixed valid date %v", name, f.Modified, f.ModifiedDate, entryTime)
		}
	}
	bin := seen[exe]
	if bin.Mode().Perm()&0o111 == 0 {
		t.Errorf("%s lost its executable bit: %v", exe, bin.Mode())
	}
	rc, _ := bin.Open()
	b, _ := io.ReadAll(rc)
	rc.Close()
	ef, err := elf.NewFile(bytes.NewReader(b))
	if err != nil || ef.Machine != elf.EM_X86_64 || ef.Class != elf.ELFCLASS64 {
		t.Fatalf("bin/handler is not a linux/amd64 ELF binary: %v", err)
	}
	for _, p := range ef.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("bin/handler is dynamically linked; CGO_ENABLED=0 must give a static binary")
		}
	}
}
