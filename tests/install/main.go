// A Go program in a module outside liblmx's tree: the liblmx Go packages link the installed
// library through `#cgo pkg-config: lmx`. Usage: app MODEL_DIR; prints four tokens and "ok".
package main

import (
	"context"
	"fmt"
	"log"
	"os"

	"liblmx/go/inference"
	"liblmx/go/lmx"
	_ "liblmx/go/metal"
)

func main() {
	m, err := inference.LoadModel(os.Args[1])
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	n := 0
	for tok := range m.Generate(context.Background(), "The keeper counted", inference.WithMaxTokens(4)) {
		fmt.Printf("token %d: %q\n", tok.ID, tok.Text)
		n++
	}
	if err := m.Err(); err != nil || n == 0 {
		log.Fatalf("generated %d tokens: %v", n, err)
	}
	fmt.Printf("liblmx %s: ok\n", lmx.Version())
}
