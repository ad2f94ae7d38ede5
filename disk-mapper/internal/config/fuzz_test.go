package config

import "testing"

// FuzzParse checks that parsing never panics, that nothing is returned with
// an error, and that every accepted endpoint passes CheckEndpoint.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"joinEndpoints: [\"10.0.0.2:9000\", \"cp.example:9000\"]",
		"joinEndpoints: [\"[fd00::2]:9000\"]",
		"joinEndpoints: [\":9000\"]",
		"joinEndpoint: []",
		"{\"joinEndpoints\": [\"a:1\"]}",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		c, err := Parse(doc)
		if err != nil {
			if c != nil {
				t.Fatalf("Parse returned %+v with error %v", c, err)
			}
			return
		}
		for _, ep := range c.JoinEndpoints {
			if err := CheckEndpoint(ep); err != nil {
				t.Fatalf("accepted endpoint %q: %v", ep, err)
			}
		}
	})
}
