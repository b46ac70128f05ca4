package config

import (
	"strconv"
	"strings"
	"testing"
)

func TestScanSites(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string // "line indexed.path"
	}{
		{
			name: "arrays of tables are numbered, subtables follow their element",
			src:  "[[a]]\nx = 1\n[a.b]\ny = 2\n[[a]]\n[a.b]\ny = 3\n",
			want: []string{"1 a.[0]", "2 a.[0].x", "3 a.[0].b", "4 a.[0].b.y", "5 a.[1]", "6 a.[1].b", "7 a.[1].b.y"},
		},
		{
			name: "strings and comments that look like keys are skipped",
			src:  "a = \"\"\"\nb = 1\n\"\"\" # c = 2\nd = 'e = 3' # [f]\ng = '''\n[h]\n'''\n",
			want: []string{"1 a", "4 d", "5 g"},
		},
		{
			name: "escaped quotes and line-ending backslashes in basic strings",
			src:  "a = \"x\\\"y = 1\"\nb = \"\"\"\\\n  z\"\"\"\"\nc = 1\n",
			want: []string{"1 a", "2 b", "4 c"},
		},
		{
			name: "dotted and quoted keys, inline tables over several lines",
			src:  "[t]\n\"q.k\" . r = 1\ns = { u = 1,\n  v = { w = [ {x = 1}, {x = 2} ] } }\n",
			want: []string{"1 t", "2 t.q.k.r", "3 t.s", "3 t.s.u", "4 t.s.v", "4 t.s.v.w", "4 t.s.v.w.[0].x", "4 t.s.v.w.[1].x"},
		},
		{
			name: "CRLF line endings and a byte order mark",
			src:  "\xef\xbb\xbfa = 1\r\n[b]\r\nc = 2\r\n",
			want: []string{"1 a", "2 b", "3 b.c"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, s := range scanSites(tt.src) {
				got = append(got, strconv.Itoa(s.line)+" "+strings.Join(s.path, "."))
			}
			if strings.Join(got, "|") != strings.Join(tt.want, "|") {
				t.Errorf("sites:\ngot  %q\nwant %q", got, tt.want)
			}
		})
	}
}
