// Command chat loads a model through the inference contract and streams a chat answer. It
// imports only the contract and, for its side effect, the liblmx backend: the same program
// runs on any registered backend.
//
//	go run ./examples/chat [MODEL_DIR]
//
// MODEL_DIR defaults to $LMX_TEST_CACHE/smollm2-135m-instruct (LMX_TEST_CACHE defaults to
// ~/.cache/lmx-test; `make real-models` puts the model there).
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"liblmx/go/inference"
	_ "liblmx/go/metal" // registers the "metal" backend
)

func main() {
	log.SetFlags(0)
	dir := defaultModel()
	if len(os.Args) > 1 {
		dir = os.Args[1]
	}
	backend, err := inference.Default()
	if err != nil {
		log.Fatal(err)
	}
	m, err := inference.LoadModel(dir)
	if err != nil {
		log.Fatalf("loading %s: %v", dir, err)
	}
	defer m.Close()
	info := m.Info()
	fmt.Printf("backends %v; loaded %s with %q: %s, %d layers, vocabulary %d\n",
		inference.List(), filepath.Base(dir), backend.Name(), info.Architecture, info.NumLayers, info.VocabSize)

	question := "What is the capital of France?"
	fmt.Printf("> %s\n", question)
	for tok := range m.Chat(context.Background(), []inference.Message{{Role: "user", Content: question}}, inference.WithMaxTokens(64)) {
		fmt.Print(tok.Text)
	}
	fmt.Println()
	if err := m.Err(); err != nil {
		log.Fatal(err)
	}
	printMetrics(m.Metrics())

	// A second question with a deadline too short for the whole answer: the generation
	// stops when the context ends, and Err tells it from a normal end.
	question = "Write a long story about a lighthouse keeper."
	fmt.Printf("> %s (with a 1.5 s deadline)\n", question)
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	for tok := range m.Chat(ctx, []inference.Message{{Role: "user", Content: question}}, inference.WithMaxTokens(512)) {
		fmt.Print(tok.Text)
	}
	fmt.Println()
	switch err := m.Err(); {
	case errors.Is(err, context.DeadlineExceeded):
		fmt.Println("[stopped: deadline exceeded]")
	case err != nil:
		log.Fatal(err)
	default:
		fmt.Println("[finished before the deadline]")
	}
	printMetrics(m.Metrics())
}

func defaultModel() string {
	cache := os.Getenv("LMX_TEST_CACHE")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			log.Fatal(err)
		}
		cache = filepath.Join(home, ".cache", "lmx-test")
	}
	return filepath.Join(cache, "smollm2-135m-instruct")
}

func printMetrics(mt inference.GenerateMetrics) {
	fmt.Printf("metrics: %d prompt tokens in %v (%.0f tok/s), %d generated in %v (%.1f tok/s), peak memory %d MiB\n",
		mt.PromptTokens, mt.PrefillDuration.Round(time.Millisecond), mt.PrefillTokensPerSec,
		mt.GeneratedTokens, mt.DecodeDuration.Round(time.Millisecond), mt.DecodeTokensPerSec, mt.PeakMemoryBytes>>20)
}
