// Package docs checks that the project's Markdown renders as it is written: every table keeps
// its columns, every relative link reaches a file (and a heading, when it names one) in the
// repository, and every json block parses. It is a small linter, not a renderer: it follows the
// GitHub Flavored Markdown rules that decide these three things and nothing else.
package docs

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"testing/fstest"
	"unicode"
)

// documents are the READMEs a reader of the repository meets, relative to its root.
var documents = []string{"README.md", "handler/README.md", "tests/README.md", "infra/README.md"}

func TestDocuments(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	fsys := os.DirFS(root)
	for _, doc := range documents {
		t.Run(doc, func(t *testing.T) {
			src, err := fs.ReadFile(fsys, doc)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range lint(fsys, doc, string(src)) {
				t.Errorf("%s:%s", doc, p)
			}
		})
	}
}

// TestLinter: each rule catches what it is for, and lets through what renders correctly.
func TestLinter(t *testing.T) {
	fsys := fstest.MapFS{
		"README.md":       {Data: []byte("# Top\n\n## The two commands\n")},
		"handler/main.go": {Data: []byte("package main\n")},
	}
	for _, tc := range []struct {
		name, src string
		want      string // a fragment of the one problem expected; "" for none
	}{
		{"a good table", "| a | b |\n|---|:---:|\n| 1 | 2 |\n", ""},
		{"a table without outer pipes", "a | b\n--- | ---\n1 | 2\n", ""},
		{"a pipe inside a code span splits the cell, as GitHub renders it",
			"| path | meaning |\n|---|---|\n| `GET|HEAD /healthz` | the probe |\n", "3 cells, the header has 2"},
		{"an escaped pipe does not", "| path | meaning |\n|---|---|\n| `GET\\|HEAD /healthz` | the probe |\n", ""},
		{"a row short of a cell", "| a | b |\n|---|---|\n| 1 |\n", "1 cells, the header has 2"},
		{"a paragraph run into a table", "| a | b |\n|---|---|\n| 1 | 2 |\nmore text\n", "1 cells, the header has 2"},
		{"a separator of the wrong width", "| a | b |\n|---|\n| 1 | 2 |\n", "separator row has 1 cells"},
		{"a separator that is not one", "| a | b |\n|---|-x-|\n| 1 | 2 |\n", "not a table"},
		{"a row with no header", "text\n\n| 1 | 2 |\n", "not a table"},
		{"a pipe in a code span outside a table", "The key is `account|deployment`.\n", ""},
		{"a table in a code block is text", "```\n| a | b |\n|---|\n```\n", ""},
		{"a link to a file that exists", "[main](handler/main.go) and ![img](README.md)\n", ""},
		{"a link to a file that does not", "see [it](handler/gone.go)\n", "handler/gone.go does not exist"},
		{"a link out of the repository", "see [it](../other/README.md)\n", "outside the repository"},
		{"a link to a heading that exists", "[x](README.md#the-two-commands) [y](#a-heading)\n\n## A heading\n", ""},
		{"a link to a heading that does not", "[x](README.md#the-three-commands)\n", "no heading #the-three-commands"},
		{"links in code are text", "`[x](gone.md)`\n\n```\n[x](gone.md)\n```\n", ""},
		{"web links are not checked", "[x](https://example.com/gone) <https://example.com>\n", ""},
		{"a json block that parses", "```json\n{\"a\": [1, 2]}\n```\n", ""},
		{"a json block that does not", "```json\n{\"a\": 1,}\n```\n", "json block does not parse"},
		{"an unclosed code block", "```sh\nrun\n", "never closed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := lint(fsys, "README.md", tc.src)
			switch {
			case tc.want == "" && len(got) > 0:
				t.Errorf("unexpected problems: %q", got)
			case tc.want != "" && (len(got) != 1 || !strings.Contains(got[0], tc.want)):
				t.Errorf("got %q, want one problem containing %q", got, tc.want)
			}
		})
	}
}

// lint returns the problems of the Markdown document src, at doc (slash-separated, relative to
// the root of fsys), each as "line: what".
func lint(fsys fs.FS, doc, src string) []string {
	var probs []string
	add := func(line int, format string, args ...any) {
		probs = append(probs, fmt.Sprintf("%d: %s", line, fmt.Sprintf(format, args...)))
	}
	lines := strings.Split(strings.ReplaceAll(src, "\r\n", "\n"), "\n")
	text := make([]bool, len(lines)) // outside code blocks: Markdown, not literal text

	// Code blocks: their content is literal, and a json block must parse.
	for i := 0; i < len(lines); i++ {
		marker, info, ok := fenceOpen(lines[i])
		if !ok {
			text[i] = true
			continue
		}
		start := i
		var body []string
		for i++; i < len(lines) && !fenceClose(lines[i], marker); i++ {
			body = append(body, lines[i])
		}
		if i == len(lines) {
			add(start+1, "code block opened here is never closed")
			break
		}
		if info == "json" && !json.Valid([]byte(strings.Join(body, "\n"))) {
			add(start+1, "json block does not parse")
		}
	}

	// Tables: a header row, a separator row of as many cells, then rows up to a blank line,
	// each with as many cells as the header (GitHub drops the extra ones, or pads, silently).
	inTable := make([]bool, len(lines))
	for i := 0; i+1 < len(lines); i++ {
		if inTable[i] || !text[i] || !text[i+1] || !isRow(lines[i]) || !looksLikeSeparator(lines[i+1]) {
			continue
		}
		header, sep := cells(lines[i]), cells(lines[i+1])
		for _, c := range sep {
			if !separatorCell.MatchString(strings.TrimSpace(c)) {
				add(i+2, "separator cell %q is not dashes with optional colons: not a table", strings.TrimSpace(c))
				break
			}
		}
		if len(sep) != len(header) {
			add(i+2, "separator row has %d cells, the header has %d: not a table", len(sep), len(header))
		}
		inTable[i], inTable[i+1] = true, true
		for j := i + 2; j < len(lines) && text[j] && strings.TrimSpace(lines[j]) != ""; j++ {
			inTable[j] = true
			if n := len(cells(lines[j])); n != len(header) {
				add(j+1, "row has %d cells, the header has %d (a '|' inside a cell must be written '\\|', in code too)", n, len(header))
			}
		}
	}
	for i, l := range lines {
		if text[i] && !inTable[i] && strings.HasPrefix(strings.TrimSpace(l), "|") {
			add(i+1, "row outside any table (no header and separator row above it): not a table")
		}
	}

	// Links and images with a relative target: the file must exist, and a heading it names.
	for i, l := range lines {
		if !text[i] {
			continue
		}
		l = codeSpan.ReplaceAllString(l, "")
		var targets []string
		for _, m := range inlineLink.FindAllStringSubmatch(l, -1) {
			targets = append(targets, m[1])
		}
		if m := referenceLink.FindStringSubmatch(l); m != nil {
			targets = append(targets, m[1])
		}
		for _, target := range targets {
			if p := checkLink(fsys, doc, src, target); p != "" {
				add(i+1, "link %s: %s", target, p)
			}
		}
	}
	return probs
}

var (
	separatorCell = regexp.MustCompile(`^:?-+:?$`)
	codeSpan      = regexp.MustCompile("(`+)[^`]*?(`+)")
	inlineLink    = regexp.MustCompile(`!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)`)
	referenceLink = regexp.MustCompile(`^ {0,3}\[[^\]]+\]:\s*<?([^\s>]+)>?`)
	scheme        = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*:`)
)

// fenceOpen reports whether line opens a fenced code block, with its marker (``` or ~~~, at
// least three) and the first word of its info string.
func fenceOpen(line string) (marker, info string, ok bool) {
	t := strings.TrimLeft(line, " ")
	if len(line)-len(t) > 3 {
		return "", "", false
	}
	for _, c := range []string{"`", "~"} {
		n := len(t) - len(strings.TrimLeft(t, c))
		if n >= 3 {
			rest := strings.TrimSpace(t[n:])
			if c == "`" && strings.Contains(rest, "`") {
				return "", "", false // an inline code span, not a fence
			}
			word, _, _ := strings.Cut(rest, " ")
			return strings.Repeat(c, n), word, true
		}
	}
	return "", "", false
}

// fenceClose reports whether line closes a block opened with marker.
func fenceClose(line, marker string) bool {
	t := strings.TrimSpace(line)
	return len(line)-len(strings.TrimLeft(line, " ")) <= 3 && strings.HasPrefix(t, marker) &&
		strings.Trim(t, marker[:1]) == ""
}

// isRow: a line that can be a table row holds at least one cell separator.
func isRow(line string) bool {
	return strings.TrimSpace(line) != "" && len(splitPipes(line)) > 1
}

// looksLikeSeparator: a row meant as a table's separator, well formed or not: at least one of
// its cells is dashes with optional colons (the others are then checked strictly).
func looksLikeSeparator(line string) bool {
	if !isRow(line) {
		return false
	}
	for _, c := range cells(line) {
		if separatorCell.MatchString(strings.TrimSpace(c)) {
			return true
		}
	}
	return false
}

// cells splits a table row into its cells as GitHub does: one leading and one trailing pipe are
// optional, and every other pipe not escaped with a backslash separates cells, inside code spans
// too (the table is split before inline code is parsed, so `a|b` in a row is two cells).
func cells(line string) []string {
	t := strings.TrimSpace(line)
	t = strings.TrimPrefix(t, "|")
	if strings.HasSuffix(t, "|") && !strings.HasSuffix(t, `\|`) {
		t = t[:len(t)-1]
	}
	return splitPipes(t)
}

// splitPipes splits s at every pipe that no backslash escapes.
func splitPipes(s string) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++ // the next character is escaped, a pipe included
		case '|':
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

// checkLink returns what is wrong with a link target in doc (whose text is src), or "".
func checkLink(fsys fs.FS, doc, src, target string) string {
	if scheme.MatchString(target) || strings.HasPrefix(target, "//") {
		return "" // a web address or mail link: not this test's business
	}
	file, fragment, _ := strings.Cut(target, "#")
	file, _, _ = strings.Cut(file, "?")
	file, err := url.PathUnescape(file)
	if err != nil {
		return "not a valid path"
	}
	p := doc
	if file != "" {
		if strings.HasPrefix(file, "/") {
			return "absolute paths do not resolve on every host; make it relative"
		}
		p = path.Join(path.Dir(doc), file)
		if p == ".." || strings.HasPrefix(p, "../") {
			return "points outside the repository"
		}
		if _, err := fs.Stat(fsys, strings.TrimSuffix(p, "/")); err != nil {
			return p + " does not exist"
		}
	}
	if fragment == "" || !strings.HasSuffix(p, ".md") {
		return ""
	}
	if file != "" {
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err.Error()
		}
		src = string(b)
	}
	if !anchors(src)[fragment] {
		return fmt.Sprintf("%s has no heading #%s", p, fragment)
	}
	return ""
}

// anchors returns the ids GitHub gives a document's headings: lower case, punctuation dropped
// (hyphens and underscores kept), spaces made hyphens, "-1", "-2"... for repeats.
func anchors(src string) map[string]bool {
	ids := map[string]bool{}
	seen := map[string]int{}
	inFence := ""
	for _, l := range strings.Split(src, "\n") {
		if inFence != "" {
			if fenceClose(l, inFence) {
				inFence = ""
			}
			continue
		}
		if m, _, ok := fenceOpen(l); ok {
			inFence = m
			continue
		}
		t := strings.TrimLeft(l, " ")
		if len(l)-len(t) > 3 || !strings.HasPrefix(t, "#") {
			continue
		}
		level := len(t) - len(strings.TrimLeft(t, "#"))
		title := t[level:]
		if level > 6 || (title != "" && title[0] != ' ' && title[0] != '\t') {
			continue
		}
		title = strings.TrimRight(strings.TrimSpace(title), "#")
		var b strings.Builder
		for _, r := range strings.ToLower(strings.TrimSpace(title)) {
			switch {
			case unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '_':
				b.WriteRune(r)
			case r == ' ':
				b.WriteRune('-')
			}
		}
		id := b.String()
		if n := seen[id]; n > 0 {
			ids[fmt.Sprintf("%s-%d", id, n)] = true
		} else {
			ids[id] = true
		}
		seen[id]++
	}
	return ids
}
