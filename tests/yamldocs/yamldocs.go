// Package yamldocs splits multi-document YAML streams (rendered manifests,
// kubectl output) with apimachinery's YAML reader, so that every test reads
// "---" separators the way kubectl does instead of splitting text by hand.
package yamldocs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// Split returns the documents of a YAML stream in order, without the
// separators; documents holding only whitespace are left out.
func Split(stream []byte) ([][]byte, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(stream)))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("YAML document %d: %w", len(docs)+1, err)
		}
		if len(bytes.TrimSpace(doc)) > 0 {
			docs = append(docs, doc)
		}
	}
}
