package config

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// TestGolden parses each testdata/*.toml and compares the effective TOML of
// a good file, or the exact error text of a bad_*.toml one, with its
// .golden file. Run `go test ./config -update` to regenerate them.
func TestGolden(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.toml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".toml")
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			c, err := Parse(data, filepath.Base(file))
			var got []byte
			switch bad := strings.HasPrefix(name, "bad_"); {
			case bad && err == nil:
				t.Fatalf("parsed without error:\n%s", c.TOML())
			case !bad && err != nil:
				t.Fatalf("unexpected error:\n%v", err)
			case bad:
				got = []byte(err.Error() + "\n")
			default:
				got = c.TOML()
			}
			golden := strings.TrimSuffix(file, ".toml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("output differs from %s (run with -update to accept):\n--- got\n%s\n--- want\n%s", golden, got, want)
			}
		})
	}
}

// TestRoundTrip checks that the effective TOML of every good file parses
// back to the same Config.
func TestRoundTrip(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.toml"))
	files = append(files, filepath.Join("..", "config.example.toml"))
	for _, file := range files {
		if strings.HasPrefix(filepath.Base(file), "bad_") {
			continue
		}
		t.Run(filepath.Base(file), func(t *testing.T) {
			c, err := Load(file)
			if err != nil {
				t.Fatal(err)
			}
			assertRoundTrip(t, c)
		})
	}
}

func assertRoundTrip(t testing.TB, c *Config) {
	t.Helper()
	out := c.TOML()
	again, err := Parse(out, "effective.toml")
	if err != nil {
		t.Fatalf("effective TOML does not parse: %v\n%s", err, out)
	}
	if !reflect.DeepEqual(c, again) {
		t.Fatalf("round trip changed the config:\nbefore %+v\nafter  %+v\n%s", c, again, out)
	}
}
