package config

import (
	"bytes"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
)

// The files the schema (keys.go) generates: each test fails when the
// checked-in file differs from what the schema produces. `go generate
// ./config` (these tests with -update) rewrites them.

func TestExampleIsGenerated(t *testing.T) {
	assertGenerated(t, "../config.example.toml", exampleTOML())
}

func TestReferenceIsGenerated(t *testing.T) {
	assertGenerated(t, "../docs/configuration.md", referenceMarkdown())
}

func assertGenerated(t *testing.T, path string, want []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, want, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run `go generate ./config` to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from what config/keys.go generates; edit keys.go, not the file, and run `go generate ./config`", path)
	}
}

const exampleHead = `# closeproxy configuration: every key, with its default and what it does.
# Generated from config/keys.go by ` + "`go generate ./config`" + `: edit the
# documentation there, not here.
#
# Keys are case-sensitive and strict: an unknown key, or a value of the wrong
# type, is an error naming its line. Every key has a default except names and
# addresses. Durations are Go duration strings ("250ms", "3s", "1m") and must
# be greater than 0 unless a key says otherwise.
# ` + "`closeproxy check -config FILE -print`" + ` prints the effective
# configuration, defaults filled in.
#
# SIGHUP reloads this file. Keys marked "Restart to change it" are not
# applied by a reload: it applies everything else and logs a warning naming
# each such key that changed.
#
# Each connection through the proxy has two legs: the front leg (client <->
# proxy, which the proxy accepts) and the back leg (proxy <-> backend, which
# the proxy dialed). Whoever sends the first FIN on a leg keeps its
# TIME-WAIT; each leg's close table says where that should be.
`

// exampleTOML renders config.example.toml: every key with its
// documentation and its default, or an example value where it has none.
func exampleTOML() []byte {
	var b strings.Builder
	b.WriteString(exampleHead)
	exampleKeys(&b, "", false)
	return []byte(b.String())
}

// exampleKeys writes the keys of scope, each array of tables with one
// element; apart writes the keys shown in a second element instead.
func exampleKeys(b *strings.Builder, scope string, apart bool) {
	indent, gap := "", "\n"
	for _, k := range keysIn(scope) {
		if k.apart != apart {
			continue
		}
		if k.kind != "" {
			indent = strings.Repeat("  ", strings.Count(k.path, "."))
			header := "[" + k.path + "]"
			if k.kind == array {
				header = "[" + header + "]"
			}
			fmt.Fprintf(b, "\n%s%s%s\n", comment(indent, k.doc), indent, header)
			gap = "" // the first key follows its header
			if k.kind == array {
				exampleKeys(b, k.path, false)
				exampleApart(b, k.path)
			}
			continue
		}
		v, doc := k.example, k.doc
		if k.def != nil {
			v, doc = k.def, k.doc+"\n"+defaultLine(k)
		}
		fmt.Fprintf(b, "%s%s%s%s = %s\n", gap, comment(indent, doc), indent, k.rel()[strings.LastIndex(k.rel(), ".")+1:], format(v, scope))
		gap = "\n"
	}
}

// exampleApart writes a second element of the array of tables scope with
// the keys shown apart, if it has any.
func exampleApart(b *strings.Builder, scope string) {
	for _, k := range keysIn(scope) {
		if k.apart {
			fmt.Fprintf(b, "\n# A second [[%s]]: every key above applies.\n[[%s]]\nname = \"cluster\"\n", scope, scope)
			exampleKeys(b, scope, true)
			return
		}
	}
}

// defaultLine says what a key defaults to and whether a reload applies it.
func defaultLine(k *key) string {
	s := "Default " + format(k.def, k.scope()) + "."
	if k.restart {
		s += "\nRestart to change it: a reload keeps the running value."
	}
	return s
}

// comment renders doc as TOML comment lines.
func comment(indent, doc string) string {
	var b strings.Builder
	for _, line := range strings.Split(strings.TrimSpace(doc), "\n") {
		if line == "" {
			fmt.Fprintf(&b, "%s#\n", indent)
			continue
		}
		fmt.Fprintf(&b, "%s# %s\n", indent, line)
	}
	return b.String()
}

const referenceHead = `# Configuration reference

<!-- Generated from config/keys.go by ` + "`go generate ./config`" + `; edit the documentation there. -->

closeproxy reads one TOML file, given with ` + "`-config FILE`" + `. Keys are
case-sensitive and strict: an unknown key, a value of the wrong type or a bad
value is an error naming its file, line and key path, and every problem in
the file is reported at once. Durations are Go duration strings (` + "`\"250ms\"`, `\"3s\"`" + `)
and must be greater than 0 unless a key says otherwise.
` + "`closeproxy check -config FILE`" + ` validates a file without running it;
add ` + "`-print`" + ` to print the effective configuration with every default filled
in. [config.example.toml](../config.example.toml) shows every key with its
default.

SIGHUP reloads the file. A reload applies every key except those marked
*restart* below, which keep their running value until the process restarts.

| key | default | on reload |
| --- | --- | --- |
`

// referenceMarkdown renders docs/configuration.md: a table of every key,
// then each table and key with its documentation.
func referenceMarkdown() []byte {
	var b strings.Builder
	b.WriteString(referenceHead)
	for i := range keys {
		k := &keys[i]
		if k.kind != "" {
			continue
		}
		def := "none"
		if k.def != nil {
			def = "`" + format(k.def, k.scope()) + "`"
		}
		reload := "applied"
		if k.restart {
			reload = "restart"
		}
		fmt.Fprintf(&b, "| [`%s`](#%s) | %s | %s |\n", k.path, strings.ReplaceAll(k.path, ".", ""), def, reload)
	}
	for i := range keys {
		k := &keys[i]
		switch k.kind {
		case table:
			fmt.Fprintf(&b, "\n## `[%s]`\n\n%s\n", k.path, markdown(k.doc))
		case array:
			fmt.Fprintf(&b, "\n## `[[%s]]`\n\n%s\n", k.path, markdown(k.doc))
		default:
			doc := k.doc
			if k.def != nil {
				doc += "\n\n" + defaultLine(k)
			}
			fmt.Fprintf(&b, "\n### `%s`\n\n%s\n", k.path, markdown(doc))
		}
	}
	return []byte(b.String())
}

// quoted finds the TOML strings in documentation, such as "auto".
var quoted = regexp.MustCompile(`"[^"\n]*"`)

// markdown renders documentation as Markdown: TOML strings as code, the
// rest with < and > escaped.
func markdown(doc string) string {
	doc = strings.TrimSpace(doc)
	var b strings.Builder
	last := 0
	for _, m := range quoted.FindAllStringIndex(doc, -1) {
		b.WriteString(escapeHTML.Replace(doc[last:m[0]]))
		b.WriteString("`" + doc[m[0]:m[1]] + "`")
		last = m[1]
	}
	b.WriteString(escapeHTML.Replace(doc[last:]))
	return b.String()
}

var escapeHTML = strings.NewReplacer("<", "&lt;", ">", "&gt;")
