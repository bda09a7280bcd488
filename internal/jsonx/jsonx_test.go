package jsonx

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestStringsAgreeWithEncodingJSON(t *testing.T) {
	for _, in := range []string{
		`"plain"`, `""`, `"esc \" \\ \/ \b \f \n \r \t"`, `"\u00e9\u20ac"`, `"\ud83d\ude00"`,
		`"lone \ud83d surrogate"`, `"bad \udc00 low"`, "\"caf\xc3\xa9\"", "\"invalid \xff utf8\"",
	} {
		var want string
		if err := json.Unmarshal([]byte(in), &want); err != nil {
			t.Fatalf("encoding/json rejects %q: %v", in, err)
		}
		for name, d := range map[string]*Decoder{"bytes": NewDecoder([]byte(in)), "string": NewDecoderString(in)} {
			got, err := d.String()
			if err != nil || got != want {
				t.Errorf("%s %q: got %q, %v; want %q", name, in, got, err, want)
			}
			if err := d.End(); err != nil {
				t.Errorf("%s %q: %v", name, in, err)
			}
		}
		// Writing what was read gives JSON that reads back the same.
		enc := AppendString(nil, want)
		var back string
		if err := json.Unmarshal(enc, &back); err != nil || back != want || !utf8.Valid(enc) {
			t.Errorf("AppendString(%q) = %s, reads back %q, %v", want, enc, back, err)
		}
	}
}

func TestSyntaxErrors(t *testing.T) {
	for _, in := range []string{
		``, `{`, `{"a"}`, `{"a":}`, `{"a":1,}`, `[1,]`, `[1 2]`, `"abc`, `"\x"`, `"\u12"`, "\"a\x01\"",
		`tru`, `nul`, `-`, `01`, `1.`, `1e`, `{"a":1}}`, `{"a":` + strings.Repeat("[", MaxDepth+2) + strings.Repeat("]", MaxDepth+2) + `}`,
	} {
		d := NewDecoder([]byte(in))
		err := d.Skip()
		if err == nil {
			err = d.End()
		}
		var se *SyntaxError
		if !errors.As(err, &se) {
			t.Errorf("%q: error %v, want a *SyntaxError", in, err)
		}
		if json.Valid([]byte(in)) && !strings.Contains(in, strings.Repeat("[", MaxDepth)) {
			t.Errorf("%q is valid JSON but was rejected", in)
		}
	}
}

func TestSkipAcceptsValidJSON(t *testing.T) {
	for _, in := range []string{`null`, `true`, `-0.5e+3`, `[]`, `{}`, `{"a":[1,{"b":null}],"c":"\u00e9"}`, " \t\n[ 1 , 2 ]\r\n"} {
		d := NewDecoder([]byte(in))
		if err := d.Skip(); err != nil {
			t.Errorf("%q: %v", in, err)
		} else if err := d.End(); err != nil {
			t.Errorf("%q: %v", in, err)
		}
	}
}

func FuzzSkipAgreesWithEncodingJSON(f *testing.F) {
	for _, s := range []string{`{"a":[1,2,{"b":"c"}]}`, `"\ud83d\ude00"`, `[1e5,-0,true,null]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		d := NewDecoder(in)
		err := d.Skip()
		if err == nil {
			err = d.End()
		}
		deep := strings.Count(string(in), "[")+strings.Count(string(in), "{") > MaxDepth
		if (err == nil) != json.Valid(in) && !deep {
			t.Fatalf("%q: our verdict %v, encoding/json valid=%v", in, err, json.Valid(in))
		}
	})
}

// FuzzSkipObjectLooseAgreesWithRaw: where Raw accepts an object,
// SkipObjectLoose returns the same bytes; where SkipObjectLoose returns
// bytes that are valid JSON on their own, Raw accepts them too (the depth
// limit included).
func FuzzSkipObjectLooseAgreesWithRaw(f *testing.F) {
	for _, s := range []string{
		`{"a":[1,2,{"b":"c\"}"}]} tail`, `{"a":"\\"}`, `{"a":[}]`, `{"a":tru}`,
		`{"x":` + strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth) + `}`,
		`{"x":` + strings.Repeat("[", MaxDepth+1) + strings.Repeat("]", MaxDepth+1) + `}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		strict := NewDecoder(in)
		want, werr := strict.Raw()
		loose := NewDecoder(in)
		got, gerr := loose.SkipObjectLoose()
		if werr == nil && len(want) > 0 && want[0] == '{' {
			if gerr != nil || string(got) != string(want) || loose.pos != strict.pos {
				t.Fatalf("%q: Raw = %q, SkipObjectLoose = %q, %v", in, want, got, gerr)
			}
		}
		if gerr == nil {
			d := NewDecoder(got)
			if _, err := d.Raw(); err == nil && d.End() == nil && werr != nil {
				t.Fatalf("%q: SkipObjectLoose found valid %q where Raw fails: %v", in, got, werr)
			}
		}
	})
}
