//go:build tools

// Package tools pins the notation CLI for hack/testbin.sh (build_notation); it is never built.
package tools

import _ "github.com/notaryproject/notation/cmd/notation"
