package main

import (
	"flag"
	"strings"
)

// splitShortValues rewrites "-ojson" as "-o", "json" for every one-letter
// flag of fs that takes a value, so the usual short forms work next to -o
// json, -o=json, --output json and --output=json. The flag package alone
// reads "-ojson" as an unknown flag named "ojson". An argument that names
// a flag of fs as written (-output) is left alone, and so are values of
// flags and everything after "--".
func splitShortValues(fs *flag.FlagSet, args []string) []string {
	out := make([]string, 0, len(args)+1)
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return append(out, args[i:]...)
		}
		if len(a) < 2 || a[0] != '-' || a == "-" {
			out = append(out, a)
			continue
		}
		name := strings.TrimLeft(a, "-")
		name, _, hasValue := strings.Cut(name, "=")
		if f := fs.Lookup(name); f != nil {
			out = append(out, a)
			if !hasValue && !isBoolFlag(f) && i+1 < len(args) {
				// The next argument is this flag's value, whatever it
				// looks like.
				i++
				out = append(out, args[i])
			}
			continue
		}
		if !strings.HasPrefix(a, "--") && len(a) > 2 {
			if f := fs.Lookup(a[1:2]); f != nil && !isBoolFlag(f) {
				out = append(out, a[:2], a[2:])
				continue
			}
		}
		out = append(out, a)
	}
	return out
}

func isBoolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// requestedOutput returns the output format args ask for (-o json, -o=json,
// -ojson, --output json, --output=json), read before the flags are parsed
// so that even a usage error or an unknown command is reported in that
// format. The last one wins, as in the flag package.
func requestedOutput(args []string) outputFormat {
	format := outputText
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			break
		}
		var v string
		switch {
		case a == "-o" || a == "--o" || a == "-output" || a == "--output":
			if i+1 >= len(args) {
				continue
			}
			i++
			v = args[i]
		case strings.HasPrefix(a, "-o="), strings.HasPrefix(a, "--o="), strings.HasPrefix(a, "-output="), strings.HasPrefix(a, "--output="):
			_, v, _ = strings.Cut(a, "=")
		case strings.HasPrefix(a, "-o") && !strings.HasPrefix(a, "-output"):
			v = a[2:]
		default:
			continue
		}
		var f outputFormat
		if f.Set(v) == nil {
			format = f
		}
	}
	return format
}
