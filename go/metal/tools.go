package metal

import (
	"encoding/json"
	"fmt"
	"runtime"
	"strings"

	"liblmx/go/inference"
)

var (
	_ inference.ToolParser      = (*Model)(nil)
	_ inference.ReasoningParser = (*Model)(nil)
)

// ParseTools finds the tool calls in a generated text, written in the model's own format
// (found from its chat template and vocabulary): Hermes and Qwen's <tool_call>{...}</tool_call>,
// Qwen3-Coder's XML form, Llama 3's <|python_tag|> (or a JSON object opening the output),
// Mistral's [TOOL_CALLS]. VisibleText is the text without the calls; each call has an ID
// ("call_0"... when the text names none), Type "function" and its arguments as JSON text. A
// call that cannot be read stays in VisibleText. text is what is parsed; tokens only when text
// is empty (their texts, joined).
func (m *Model) ParseTools(tokens []inference.Token, text string) (inference.ToolParseResult, error) {
	var r inference.ToolParseResult
	err := m.parse(tokens, text, parseTools, &r)
	return r, err
}

// ParseReasoning takes the reasoning out of a generated text: the spans between the model's
// thinking tags (<think>...</think>, from its vocabulary or chat template), each a segment of
// Kind "think"; VisibleText is the rest. text is what is parsed; tokens only when text is
// empty (their texts, joined).
func (m *Model) ParseReasoning(tokens []inference.Token, text string) (inference.ReasoningParseResult, error) {
	var r inference.ReasoningParseResult
	err := m.parse(tokens, text, parseReasoning, &r)
	return r, err
}

func (m *Model) parse(tokens []inference.Token, text string, call func(cModel, string) (string, error), out any) error {
	defer runtime.KeepAlive(m)
	if text == "" {
		var b strings.Builder
		for _, t := range tokens {
			b.WriteString(t.Text)
		}
		text = b.String()
	}
	h, err := m.st.useModel()
	if err != nil {
		return err
	}
	defer m.st.doneModel()
	data, err := call(h, text)
	if err != nil {
		return err
	}
	if err := json.Unmarshal([]byte(data), out); err != nil {
		return fmt.Errorf("metal: reading liblmx's parse: %w", err)
	}
	return nil
}
