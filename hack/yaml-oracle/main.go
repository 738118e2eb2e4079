// yaml-oracle reads YAML the way Flux's kustomize-controller does, with the libraries it is built
// on (kustomize api/kyaml v0.21.1, sigs.k8s.io/yaml v1.6.0), and prints one canonical JSON object
// per line (keys sorted, numbers as Go's encoding/json wrote them). It produces the golden files
// of tests/fixtures/yaml-dialect; see the README there.
//
//	yaml-oracle json < kustomize-build-output.yaml   # what Flux's ssa.ReadObjects makes of it
//	yaml-oracle d1 FILE                              # a manifest read by kustomize (kyaml + go-yaml v3)
//	yaml-oracle d2 FILE                              # text re-read after post-build substitution
//	yaml-oracle flux-kus FILE                        # kustomization.yaml as Flux's generator rewrites it
//	yaml-oracle postbuild FILE NAME=VALUE...         # d1, then post-build substitution of ${NAME}
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"

	kustypes "sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/kio"
	kyaml "sigs.k8s.io/kustomize/kyaml/yaml"
	sigsyaml "sigs.k8s.io/yaml"
)

func main() {
	if len(os.Args) < 2 {
		fail(fmt.Errorf("usage: yaml-oracle json|d1|d2|flux-kus|postbuild [FILE [NAME=VALUE...]]"))
	}
	var err error
	switch os.Args[1] {
	case "json":
		var data []byte
		if data, err = io.ReadAll(os.Stdin); err == nil {
			err = printDocuments(data)
		}
	case "d1":
		err = d1(read())
	case "d2":
		err = d2(read())
	case "flux-kus":
		err = fluxKustomization(read())
	case "postbuild":
		err = postBuild(read(), os.Args[3:])
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fail(err)
	}
}

func read() []byte {
	if len(os.Args) < 3 {
		fail(fmt.Errorf("%s needs a file", os.Args[1]))
	}
	data, err := os.ReadFile(os.Args[2])
	if err != nil {
		fail(err)
	}
	return data
}

func fail(err error) {
	fmt.Println("ERR", err)
	os.Exit(1)
}

// printDocuments converts each document of a YAML stream as the Kubernetes YAML decoder that
// ssa.ReadObjects uses does (split on `---` lines, then sigs.k8s.io/yaml.YAMLToJSON).
func printDocuments(data []byte) error {
	for _, doc := range split(data) {
		j, err := sigsyaml.YAMLToJSON(doc)
		if err != nil {
			return err
		}
		if err := printCanonical(j); err != nil {
			return err
		}
	}
	return nil
}

// split is k8s.io/apimachinery's YAMLReader: a line starting with `---` and followed by nothing
// but blanks or a comment ends a document; empty documents are skipped.
func split(data []byte) [][]byte {
	var docs [][]byte
	var cur bytes.Buffer
	flush := func() {
		if len(bytes.TrimSpace(cur.Bytes())) > 0 {
			docs = append(docs, append([]byte(nil), cur.Bytes()...))
		}
		cur.Reset()
	}
	scanner := bufio.NewScanner(bytes.NewReader(data))
	scanner.Buffer(make([]byte, 1<<20), 64<<20)
	for scanner.Scan() {
		line := scanner.Text()
		if strings.HasPrefix(line, "---") {
			rest := strings.TrimSpace(line[3:])
			if rest == "" || strings.HasPrefix(rest, "#") {
				flush()
				continue
			}
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
	}
	flush()
	return docs
}

// printCanonical prints JSON with sorted keys, keeping each number's text.
func printCanonical(j []byte) error {
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.UseNumber()
	var v interface{}
	if err := dec.Decode(&v); err != nil {
		return err
	}
	if v == nil {
		return nil
	}
	out, err := json.Marshal(v)
	if err != nil {
		return err
	}
	fmt.Println(string(out))
	return nil
}

// d1: kustomize reads a manifest (kio.FromBytes: go-yaml v3 nodes, anchors and merge keys
// inlined), Resource.AsYAML writes it (RNode.MarshalJSON: go-yaml v3 into
// map[string]interface{} and encoding/json, then JSONToYAML), and the API client reads that.
func d1(data []byte) error {
	nodes, err := kio.FromBytes(data)
	if err != nil {
		return err
	}
	var out bytes.Buffer
	for _, node := range nodes {
		j, err := node.MarshalJSON()
		if err != nil {
			return err
		}
		y, err := sigsyaml.JSONToYAML(j)
		if err != nil {
			return err
		}
		out.WriteString("---\n")
		out.Write(y)
	}
	return printDocuments(out.Bytes())
}

// d2: the YAML text after envsubst, as fluxcd/pkg/kustomize SubstituteVariables reads it back
// (YAMLToJSON, Resource.UnmarshalJSON), then written and read as in d1.
func d2(data []byte) error {
	j, err := sigsyaml.YAMLToJSON(data)
	if err != nil {
		return err
	}
	node := kyaml.NewRNode(&kyaml.Node{})
	if err := node.UnmarshalJSON(j); err != nil {
		return err
	}
	j, err = node.MarshalJSON()
	if err != nil {
		return err
	}
	y, err := sigsyaml.JSONToYAML(j)
	if err != nil {
		return err
	}
	return printDocuments(y)
}

// fluxKustomization: the generator's yaml.Unmarshal into kustypes.Kustomization (numbers and
// booleans under string fields become strings) and yaml.Marshal.
func fluxKustomization(data []byte) error {
	var k kustypes.Kustomization
	if err := sigsyaml.Unmarshal(data, &k); err != nil {
		return err
	}
	out, err := sigsyaml.Marshal(k)
	if err != nil {
		return err
	}
	fmt.Print(string(out))
	return nil
}

// postBuild: each object of a manifest as kustomize hands it on (d1), written as
// Resource.AsYAML writes it, with ${NAME} replaced as fluxcd/pkg/kustomize SubstituteVariables
// does for plain references (envsubst; defaults and escapes are not needed here), then read
// back as in d2.
func postBuild(data []byte, assignments []string) error {
	vars := map[string]string{}
	for _, a := range assignments {
		name, value, ok := strings.Cut(a, "=")
		if !ok {
			return fmt.Errorf("not NAME=VALUE: %q", a)
		}
		vars[name] = value
	}
	reference := regexp.MustCompile(`\$\{([_a-zA-Z][_a-zA-Z0-9]*)\}`)
	nodes, err := kio.FromBytes(data)
	if err != nil {
		return err
	}
	for _, node := range nodes {
		j, err := node.MarshalJSON()
		if err != nil {
			return err
		}
		y, err := sigsyaml.JSONToYAML(j)
		if err != nil {
			return err
		}
		substituted := reference.ReplaceAllStringFunc(string(y), func(ref string) string {
			return vars[ref[2:len(ref)-1]]
		})
		if err := d2([]byte(substituted)); err != nil {
			return err
		}
	}
	return nil
}
