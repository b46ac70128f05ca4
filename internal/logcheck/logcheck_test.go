package logcheck

import "testing"

func TestDuplicateKey(t *testing.T) {
	for _, tc := range []struct{ name, line, dup string }{
		{"distinct keys", `{"msg":"x","backend":"app","n":1}`, ""},
		{"repeated at the top", `{"msg":"x","backend":"app","backend":"app"}`, "backend"},
		{"repeated in a nested object", `{"msg":"x","o":{"a":1,"a":2}}`, "a"},
		{"same key in two objects of an array", `{"l":[{"a":1},{"a":2}]}`, ""},
		{"repeated after a nested one", `{"o":{"a":1},"b":[1,2],"b":3}`, "b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dup, err := DuplicateKey([]byte(tc.line))
			if err != nil || dup != tc.dup {
				t.Errorf("DuplicateKey(%s) = %q, %v; want %q", tc.line, dup, err, tc.dup)
			}
		})
	}
	if _, err := DuplicateKey([]byte(`{"a":`)); err == nil {
		t.Error("a truncated line: no error")
	}
}
