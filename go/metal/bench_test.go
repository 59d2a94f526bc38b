package metal

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"liblmx/go/inference"
)

// Throughput through the whole Go stack (options, slot, pull stream, one cgo call per
// token), reported as tokens per second from liblmx's metrics:
//
//	go test -run '^$' -bench . ./metal
//
// "fixture" is the tiny qwen3 fixture (per-token overhead dominates); "smollm2" is
// SmolLM2-135M-Instruct when `make real-models` has prepared it.
func benchModels(b *testing.B) map[string]string {
	models := map[string]string{"fixture": filepath.Join(fixtures, "qwen3")}
	if dir := realModelDir(); fileExists(filepath.Join(dir, "config.json")) {
		models["smollm2"] = dir
	}
	return models
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func BenchmarkPrefill(b *testing.B) {
	for _, name := range []string{"fixture", "smollm2"} {
		dir, ok := benchModels(b)[name]
		b.Run(name, func(b *testing.B) {
			if !ok {
				b.Skip("model absent")
			}
			m, err := Load(dir, inference.WithContextLen(4096))
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			body := strings.Repeat("The keeper counted 37 grey ships, then wrote a letter. ", 40)
			var tokens int
			var seconds float64
			i := 0
			for b.Loop() {
				// A different first word each time: the session's cache must not reuse a prefix.
				prompt := fmt.Sprintf("%d %s", i, body)
				i++
				for range m.Generate(ctx, prompt, inference.WithMaxTokens(1)) {
				}
				if err := m.Err(); err != nil {
					b.Fatal(err)
				}
				mt := m.Metrics()
				tokens += mt.PromptTokens
				seconds += mt.PrefillDuration.Seconds()
			}
			b.ReportMetric(float64(tokens)/seconds, "prefill-tok/s")
			b.ReportMetric(float64(tokens)/float64(i), "prompt-tokens")
		})
	}
}

func BenchmarkDecode(b *testing.B) {
	for _, name := range []string{"fixture", "smollm2"} {
		dir, ok := benchModels(b)[name]
		b.Run(name, func(b *testing.B) {
			if !ok {
				b.Skip("model absent")
			}
			m, err := Load(dir, inference.WithContextLen(4096))
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			const n = 64
			var tokens int
			var seconds float64
			for b.Loop() {
				for range m.Generate(ctx, "Once upon a time", inference.WithMaxTokens(n), WithIgnoreEOS()) {
				}
				if err := m.Err(); err != nil {
					b.Fatal(err)
				}
				mt := m.Metrics()
				// The first token comes out of the prefill.
				tokens += mt.GeneratedTokens - 1
				seconds += mt.DecodeDuration.Seconds()
			}
			b.ReportMetric(float64(tokens)/seconds, "decode-tok/s")
		})
	}
}
