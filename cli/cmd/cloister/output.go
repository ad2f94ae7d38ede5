package main

import (
	"encoding/json"
	"fmt"
	"io"

	"sigs.k8s.io/yaml"
)

// printData prints v as JSON or YAML (its json tags are the stable field
// names), or calls text for people.
func printData(w io.Writer, format outputFormat, v any, text func(io.Writer)) error {
	switch format {
	case outputJSON:
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return fmt.Errorf("internal error: encoding output: %w", err)
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	case outputYAML:
		b, err := yaml.Marshal(v)
		if err != nil {
			return fmt.Errorf("internal error: encoding output: %w", err)
		}
		_, err = w.Write(b)
		return err
	}
	text(w)
	return nil
}
