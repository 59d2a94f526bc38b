package metal

import (
	"encoding/json"
	"iter"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"liblmx/go/inference"
)

const fixtures = "../../tests/fixtures"

// fixtureRef is a fixture's reference.json: the prompt and the greedy continuation
// (computed without stopping at EOS).
type fixtureRef struct {
	PromptText string  `json:"prompt_text"`
	PromptIDs  []int32 `json:"prompt_ids"`
	NGreedy    int     `json:"n_greedy"`
	HF         *struct {
		GreedyIDs []int32 `json:"greedy_ids"`
	} `json:"hf"`
	MLXLM *struct {
		GreedyIDs []int32 `json:"greedy_ids"`
	} `json:"mlx_lm"`
}

func (r fixtureRef) greedy() []int32 {
	if r.HF != nil {
		return r.HF.GreedyIDs
	}
	return r.MLXLM.GreedyIDs
}

func readJSON(t testing.TB, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func readRef(t testing.TB, name string) fixtureRef {
	var r fixtureRef
	readJSON(t, filepath.Join(fixtures, name, "reference.json"), &r)
	return r
}

// eosIDs are the end-of-sequence ids of config.json and generation_config.json (an int or a
// list in each).
func eosIDs(t testing.TB, dir string) []int32 {
	t.Helper()
	var ids []int32
	for _, f := range []string{"config.json", "generation_config.json"} {
		var cfg struct {
			EOS json.RawMessage `json:"eos_token_id"`
		}
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			continue
		}
		readJSON(t, filepath.Join(dir, f), &cfg)
		var one int32
		var many []int32
		if json.Unmarshal(cfg.EOS, &one) == nil {
			ids = append(ids, one)
		} else if json.Unmarshal(cfg.EOS, &many) == nil {
			ids = append(ids, many...)
		}
	}
	return ids
}

// untilEOS is ids up to (not including) the first EOS id.
func untilEOS(ids, eos []int32) []int32 {
	for i, id := range ids {
		if slices.Contains(eos, id) {
			return ids[:i]
		}
	}
	return ids
}

func load(t testing.TB, name string, opts ...inference.LoadOption) *Model {
	t.Helper()
	m, err := Load(filepath.Join(fixtures, name), opts...)
	if err != nil {
		t.Fatalf("loading %s: %v", name, err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// collect ranges over a generation: the token ids (without the text-only pieces of id -1)
// and the whole text.
func collect(seq iter.Seq[inference.Token]) ([]int32, string) {
	var ids []int32
	var text strings.Builder
	for tok := range seq {
		if tok.ID >= 0 {
			ids = append(ids, tok.ID)
		}
		text.WriteString(tok.Text)
	}
	return ids, text.String()
}
