package metal

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"liblmx/go/inference"
	"liblmx/go/lmx"
)

var weatherTool = inference.Tool{
	Name:        "get_weather",
	Description: "The current weather in a city",
	Parameters:  json.RawMessage(`{"type":"object","properties":{"city":{"type":"string"}},"required":["city"],"additionalProperties":false}`),
}

var timeTool = inference.Tool{
	Name:        "get_time",
	Description: "The local time in a city",
	Parameters:  json.RawMessage(`{"type":"object","properties":{"city":{"type":"string"}},"required":["city"],"additionalProperties":false}`),
}

func TestParseTools(t *testing.T) {
	m := load(t, "qwen3")
	r, err := m.ParseTools(nil, "Let me look.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>")
	if err != nil {
		t.Fatal(err)
	}
	if r.VisibleText != "Let me look." || len(r.Calls) != 1 {
		t.Fatalf("%+v", r)
	}
	c := r.Calls[0]
	var args struct{ City string }
	if c.Name != "get_weather" || c.Type != "function" || c.ID == "" || json.Unmarshal([]byte(c.ArgumentsJSON), &args) != nil || args.City != "Paris" {
		t.Fatalf("%+v", c)
	}
	// Two calls; the tokens stand in for an empty text.
	two := `<tool_call>{"name":"get_weather","arguments":{"city":"Paris"}}</tool_call><tool_call>{"name":"get_time","arguments":{"city":"Oslo"}}</tool_call>`
	r, err = m.ParseTools([]inference.Token{{ID: 1, Text: two[:20]}, {ID: 2, Text: two[20:]}}, "")
	if err != nil || len(r.Calls) != 2 || r.Calls[1].Name != "get_time" || r.Calls[0].ID == r.Calls[1].ID || r.VisibleText != "" {
		t.Fatalf("%+v, %v", r, err)
	}
	// No call: the text is all visible.
	if r, err = m.ParseTools(nil, "Just an answer."); err != nil || r.VisibleText != "Just an answer." || len(r.Calls) != 0 {
		t.Fatalf("%+v, %v", r, err)
	}
	// A call that cannot be read stays in the visible text.
	broken := `<tool_call>{"name": </tool_call>`
	if r, err = m.ParseTools(nil, broken); err != nil || len(r.Calls) != 0 || !strings.Contains(r.VisibleText, "<tool_call>") {
		t.Fatalf("%+v, %v", r, err)
	}
}

func TestParseReasoning(t *testing.T) {
	m := load(t, "qwen3")
	r, err := m.ParseReasoning(nil, "<think>plan</think>answer")
	if err != nil {
		t.Fatal(err)
	}
	if r.VisibleText != "answer" || len(r.Reasoning) != 1 || r.Reasoning[0].Text != "plan" || r.Reasoning[0].Kind != "think" {
		t.Fatalf("%+v", r)
	}
	if r, err = m.ParseReasoning(nil, "no thinking here"); err != nil || r.VisibleText != "no thinking here" || len(r.Reasoning) != 0 {
		t.Fatalf("%+v, %v", r, err)
	}
}

func TestParseOnClosedModel(t *testing.T) {
	m := load(t, "qwen3")
	m.Close()
	if _, err := m.ParseTools(nil, "x"); !errors.Is(err, ErrClosed) {
		t.Fatal(err)
	}
	if _, err := m.ParseReasoning(nil, "x"); !errors.Is(err, ErrClosed) {
		t.Fatal(err)
	}
}

// Tool messages reach the chat template: the result renders into the prompt (the fixture's
// template, a short one, shows no calls), and the conversation generates.
func TestToolMessagesRender(t *testing.T) {
	m := load(t, "qwen3")
	msgs := []inference.Message{
		{Role: "user", Content: "Weather in Paris?"},
		{Role: "assistant", ToolCalls: []inference.ToolCall{{ID: "call_0", Name: "get_weather", ArgumentsJSON: `{"city":"Paris"}`}}},
		{Role: "tool", Content: "sunny, 21C", ToolCallID: "call_0", Name: "get_weather"},
	}
	text, err := m.ChatTemplate(msgs)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"<|im_start|>tool\nsunny, 21C"} {
		if !strings.Contains(text, want) {
			t.Fatalf("%q lacks %q", text, want)
		}
	}
	// The same conversation generates (tools offered too).
	ids, _ := collect(m.Chat(ctx, msgs, inference.WithTools(weatherTool), inference.WithMaxTokens(3), WithIgnoreEOS()))
	if len(ids) != 3 || m.Err() != nil {
		t.Fatal(ids, m.Err())
	}
	// Arguments that are not JSON are refused, naming the call.
	bad := []inference.Message{{Role: "assistant", ToolCalls: []inference.ToolCall{{Name: "get_weather", ArgumentsJSON: "{city"}}}}
	if _, err := m.ChatTemplate(bad); !errors.Is(err, lmx.ErrInvalidArgument) || !strings.Contains(err.Error(), "get_weather") {
		t.Fatal(err)
	}
}

func TestBadTools(t *testing.T) {
	m := load(t, "qwen3")
	msgs := []inference.Message{{Role: "user", Content: "Hi"}}
	for _, opts := range [][]inference.GenerateOption{
		{inference.WithTools(inference.Tool{Description: "no name"})},
		{inference.WithTools(inference.Tool{Name: "f", Parameters: json.RawMessage(`{"type":`)})},
		{inference.WithThinkingBudget(-1)},
	} {
		ids, _ := collect(m.Chat(ctx, msgs, append(opts, inference.WithMaxTokens(2))...))
		if len(ids) != 0 || !errors.Is(m.Err(), lmx.ErrInvalidArgument) {
			t.Fatal(ids, m.Err())
		}
	}
}

// With tools required, SmolLM2 (greedy) writes a call to one of them, and ParseTools (and
// the Reply) read it back with arguments that are JSON.
func TestRealToolCall(t *testing.T) {
	m, err := Load(realModel(t))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	msgs := []inference.Message{{Role: "user", Content: "What is the weather like in Paris right now?"}}
	var rep Reply
	_, text := collect(m.Chat(ctx, msgs, inference.WithTools(weatherTool, timeTool), inference.WithToolChoice("required"),
		inference.WithMaxTokens(96), WithReplySink(func(r Reply) { rep = r })))
	if err := m.Err(); err != nil {
		t.Fatal(err)
	}
	t.Logf("text %q, reply %+v", text, rep)
	names := []string{weatherTool.Name, timeTool.Name}
	check := func(calls []inference.ToolCall) {
		t.Helper()
		if len(calls) == 0 {
			t.Fatalf("no call in %q", text)
		}
		for _, c := range calls {
			var args map[string]any
			if !slices.Contains(names, c.Name) || json.Unmarshal([]byte(c.ArgumentsJSON), &args) != nil {
				t.Fatalf("call %+v", c)
			}
		}
	}
	check(rep.Message.ToolCalls)
	// The stream withholds the calls from the text; the text liblmx streams plus the calls is
	// what the parse of the model's raw output gives.
	raw := text
	for _, c := range rep.Message.ToolCalls {
		raw += "<tool_call>\n" + `{"name": "` + c.Name + `", "arguments": ` + c.ArgumentsJSON + "}\n</tool_call>"
	}
	r, err := m.ParseTools(nil, raw)
	if err != nil {
		t.Fatal(err)
	}
	check(r.Calls)
	// A named choice calls that tool.
	rep = Reply{}
	collect(m.Chat(ctx, msgs, inference.WithTools(weatherTool, timeTool), inference.WithToolChoice("get_time"),
		inference.WithMaxTokens(96), WithReplySink(func(r Reply) { rep = r })))
	if err := m.Err(); err != nil || len(rep.Message.ToolCalls) == 0 || rep.Message.ToolCalls[0].Name != "get_time" {
		t.Fatalf("%+v, %v", rep, err)
	}
}

// A prompt that opens a think block starts the output inside it: with a budget of 4 tokens
// the closing tag is forced after them, the reasoning goes to Reply.Reasoning and only what
// follows is streamed.
func TestThinkingBudget(t *testing.T) {
	m := load(t, "qwen3")
	var rep Reply
	_, text := collect(m.Generate(ctx, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n", inference.WithThinkingBudget(4),
		inference.WithMaxTokens(12), WithIgnoreEOS(), WithReplySink(func(r Reply) { rep = r })))
	if err := m.Err(); err != nil {
		t.Fatal(err)
	}
	if rep.Reasoning == "" || strings.Contains(text, "</think>") || rep.Message.Content != text {
		t.Fatalf("text %q, reply %+v", text, rep)
	}
}
