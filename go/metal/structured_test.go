package metal

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"iter"
	"regexp"
	"slices"
	"strings"
	"testing"

	"liblmx/go/inference"
	"liblmx/go/lmx"
)

// The fixtures have random weights: what they generate under a constraint is whatever the
// constraint lets through, so these tests use constraints every path of which ends within
// the token budget.

func TestWithRegex(t *testing.T) {
	m := load(t, "qwen3")
	rx := `[a-z]{3}-[0-9]{2}`
	for _, seed := range []uint64{1, 2, 3} {
		_, text := collect(m.Generate(ctx, "Code:", inference.WithRegex(rx), inference.WithMaxTokens(32),
			inference.WithTemperature(1), inference.WithSeed(seed)))
		if err := m.Err(); err != nil {
			t.Fatal(err)
		}
		if !regexp.MustCompile(`^(?:` + rx + `)$`).MatchString(text) {
			t.Fatalf("seed %d: %q does not match %s", seed, text, rx)
		}
	}
}

func TestWithChoices(t *testing.T) {
	m := load(t, "qwen3")
	choices := []string{"red", "green", "blue sky"}
	msgs := []inference.Message{{Role: "user", Content: "Pick a colour."}}
	for _, seed := range []uint64{1, 2, 3, 4} {
		_, text := collect(m.Chat(ctx, msgs, inference.WithChoices(choices...), inference.WithMaxTokens(16),
			inference.WithTemperature(1), inference.WithSeed(seed)))
		if err := m.Err(); err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(choices, text) {
			t.Fatalf("seed %d: %q is none of %q", seed, text, choices)
		}
	}
}

func TestWithGrammar(t *testing.T) {
	m := load(t, "qwen3")
	lark := `start: "yes" | "no" | "n/a"`
	_, text := collect(m.Generate(ctx, "Answer:", inference.WithGrammar(lark), inference.WithMaxTokens(8)))
	if err := m.Err(); err != nil {
		t.Fatal(err)
	}
	if text != "yes" && text != "no" && text != "n/a" {
		t.Fatalf("%q is not in the grammar's language", text)
	}
}

// A bounded schema: every value it allows is short, so even random weights finish it.
const personSchema = `{"type":"object","properties":{"name":{"type":"string","enum":["Ada","Alan","Grace"]},` +
	`"age":{"type":"integer","minimum":0,"maximum":120}},"required":["name","age"],"additionalProperties":false}`

func TestWithJSONSchemaFixture(t *testing.T) {
	m := load(t, "qwen3")
	msgs := []inference.Message{{Role: "user", Content: "Describe someone."}}
	_, text := collect(m.Chat(ctx, msgs, inference.WithJSONSchema(personSchema), inference.WithMaxTokens(64)))
	if err := m.Err(); err != nil {
		t.Fatal(err)
	}
	checkPerson(t, text)
}

func checkPerson(t *testing.T, text string) {
	t.Helper()
	var p struct {
		Name *string `json:"name"`
		Age  *int    `json:"age"`
	}
	if err := unmarshalStrict(text, &p); err != nil {
		t.Fatalf("%q: %v", text, err)
	}
	if p.Name == nil || p.Age == nil || !slices.Contains([]string{"Ada", "Alan", "Grace"}, *p.Name) || *p.Age < 0 || *p.Age > 120 {
		t.Fatalf("%q does not satisfy the schema", text)
	}
}

// Bad constraints are refused before anything is generated, with an error that says what
// was wrong, and the model (and the session) keep working.
func TestBadConstraints(t *testing.T) {
	m := load(t, "qwen3")
	s := newTestSession(t, m)
	for _, tc := range []struct {
		name string
		opt  inference.GenerateOption
		want string
	}{
		{"schema not JSON", inference.WithJSONSchema(`{"type":`), ""},
		{"schema of a wrong type", inference.WithJSONSchema(`{"type":12}`), ""},
		{"regex", inference.WithRegex(`(ab`), ""},
		{"grammar", inference.WithGrammar(`start: undefined_rule`), ""},
		{"empty choice", inference.WithChoices("a", ""), ""},
		{"two constraints", func(c *inference.GenerateConfig) {
			inference.WithRegex("a+")(c)
			inference.WithJSONObject()(c)
		}, "WithJSONObject, WithRegex"},
		{"three constraints", func(c *inference.GenerateConfig) {
			inference.WithJSONSchema(personSchema)(c)
			inference.WithGrammar(`start: "a"`)(c)
			inference.WithChoices("a")(c)
		}, "WithJSONSchema, WithGrammar, WithChoices"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, g := range []generator{m, s} {
				ids, _ := collect(g.Generate(ctx, "Hello", tc.opt, inference.WithMaxTokens(4)))
				err := g.Err()
				if len(ids) != 0 || !errors.Is(err, lmx.ErrInvalidArgument) {
					t.Fatalf("%T: generated %v, error %v; want no tokens and an invalid-argument error", g, ids, err)
				}
				if tc.want != "" && !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("%q does not name %s", err, tc.want)
				}
				if ids, _ := collect(g.Generate(ctx, "Hello", inference.WithMaxTokens(3), WithIgnoreEOS())); len(ids) != 3 || g.Err() != nil {
					t.Fatalf("%T after the refusal: %v, %v", g, ids, g.Err())
				}
			}
		})
	}
	// WithJSONObject alone is fine; order does not matter for the refusal above (the message
	// lists the options in a fixed order).
	if _, err := params(inference.ApplyGenerateOpts([]inference.GenerateOption{inference.WithJSONObject()}), extras{}, 16); err != nil {
		t.Fatal(err)
	}
}

// EnableThinking reaches the chat template: Qwen 3's template closes an empty think block
// in the prompt when thinking is off.
func TestWithEnableThinking(t *testing.T) {
	m := load(t, "qwen3")
	msgs := []inference.Message{{Role: "user", Content: "Hi"}}
	prompt := func(opts ...inference.GenerateOption) int {
		var n int
		opts = append(opts, inference.WithMaxTokens(1), inference.WithMetricsSink(func(mt inference.GenerateMetrics) { n = mt.PromptTokens }))
		collect(m.Chat(ctx, msgs, opts...))
		if err := m.Err(); err != nil {
			t.Fatal(err)
		}
		return n
	}
	on, off := true, false
	def, withOn, withOff := prompt(), prompt(inference.WithEnableThinking(&on)), prompt(inference.WithEnableThinking(&off))
	if def != withOn || withOff <= withOn {
		t.Fatalf("prompt tokens: default %d, thinking on %d, off %d", def, withOn, withOff)
	}
}

// generator is what Model and Session share for these tests.
type generator interface {
	Generate(ctx context.Context, prompt string, opts ...inference.GenerateOption) iter.Seq[inference.Token]
	Err() error
}

// unmarshalStrict decodes one JSON value that is the whole text, with no unknown fields.
func unmarshalStrict(text string, v any) error {
	d := json.NewDecoder(bytes.NewReader([]byte(text)))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return err
	}
	if _, err := d.Token(); err != io.EOF {
		return errors.New("more after the JSON value")
	}
	return nil
}

// SmolLM2 answers a request for JSON with an object of the schema's fields, under a schema
// that leaves the values free (a string, an integer), greedy.
func TestRealStructuredOutput(t *testing.T) {
	m, err := Load(realModel(t))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	schema := `{"type":"object","properties":{"city":{"type":"string"},"country":{"type":"string"},"population":{"type":"integer"}},` +
		`"required":["city","country","population"],"additionalProperties":false}`
	msgs := []inference.Message{{Role: "user", Content: "Describe Paris as JSON with its city name, country and population."}}
	_, text := collect(m.Chat(ctx, msgs, inference.WithJSONSchema(schema), inference.WithMaxTokens(96)))
	if err := m.Err(); err != nil {
		t.Fatal(err)
	}
	var got struct {
		City       *string `json:"city"`
		Country    *string `json:"country"`
		Population *int64  `json:"population"`
	}
	if err := unmarshalStrict(text, &got); err != nil || got.City == nil || got.Country == nil || got.Population == nil {
		t.Fatalf("%q: %v (%+v)", text, err, got)
	}
	t.Logf("%s", text)

	_, text = collect(m.Chat(ctx, []inference.Message{{Role: "user", Content: "In which year did the Berlin Wall fall?"}},
		inference.WithRegex(`[12][0-9]{3}`), inference.WithMaxTokens(8)))
	if err := m.Err(); err != nil || !regexp.MustCompile(`^[12][0-9]{3}$`).MatchString(text) {
		t.Fatalf("%q, %v", text, err)
	}
	t.Logf("year: %s", text)

	choices := []string{"positive", "negative", "neutral"}
	_, text = collect(m.Chat(ctx, []inference.Message{{Role: "user", Content: "Sentiment of 'I love this film!'?"}},
		inference.WithChoices(choices...), inference.WithMaxTokens(8)))
	if err := m.Err(); err != nil || !slices.Contains(choices, text) {
		t.Fatalf("%q, %v", text, err)
	}
	t.Logf("sentiment: %s", text)

	_, text = collect(m.Chat(ctx, []inference.Message{{Role: "user", Content: "Give me a JSON object with a greeting."}},
		inference.WithJSONObject(), inference.WithMaxTokens(64)))
	var obj map[string]any
	if err := m.Err(); err != nil || json.Unmarshal([]byte(text), &obj) != nil {
		t.Fatalf("%q, %v", text, err)
	}
	t.Logf("object: %s", text)
}
