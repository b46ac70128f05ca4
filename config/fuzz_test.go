package config

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse feeds Parse arbitrary bytes: it must never panic, and whatever
// it accepts must print as TOML that parses back to the same Config.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.toml"))
	for _, file := range append(files, filepath.Join("..", "config.example.toml")) {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(minimal + "[listener.close]\ntime_wait = \"\\u00e9\\\"x\"\n"))
	f.Add([]byte("a = [{b = [{c = 1}]}, '''x''']\n[[a.d]]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, "fuzz.toml")
		if err != nil {
			return
		}
		assertRoundTrip(t, c)
	})
}
