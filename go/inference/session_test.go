package inference

import (
	"strings"
	"testing"
)

func TestApplySessionOpts(t *testing.T) {
	tests := []struct {
		name string
		opts []SessionOption
		want SessionConfig
	}{
		{"defaults", nil, SessionConfig{}},
		{"nil option skipped", []SessionOption{nil}, SessionConfig{}},
		{"bits", []SessionOption{WithKVBits(8)}, SessionConfig{KVBits: 8}},
		{"group", []SessionOption{WithKVGroupSize(32)}, SessionConfig{KVGroupSize: 32}},
		{"start", []SessionOption{WithKVQuantStart(5000)}, SessionConfig{KVQuantStart: 5000}},
		{"later wins", []SessionOption{WithKVBits(4), WithKVBits(8)}, SessionConfig{KVBits: 8}},
		{"all", []SessionOption{WithKVBits(4), WithKVGroupSize(128), WithKVQuantStart(16)},
			SessionConfig{KVBits: 4, KVGroupSize: 128, KVQuantStart: 16}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ApplySessionOpts(tt.opts); got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// A model whose backend keeps no sessions is refused by name, not with a panic.
func TestNewSessionNeedsAStatefulModel(t *testing.T) {
	s, err := NewSession(&fakeModel{backend: "fake"})
	if err == nil || s != nil {
		t.Fatalf("NewSession on a plain TextModel = %v, %v; want an error", s, err)
	}
	if !strings.Contains(err.Error(), "keeps no sessions") {
		t.Fatalf("error %q does not say why", err)
	}
}

// fakeStateful records the config its NewSession got.
type fakeStateful struct {
	fakeModel
	got SessionConfig
}

func (m *fakeStateful) NewSession(opts ...SessionOption) (Session, error) {
	m.got = ApplySessionOpts(opts)
	return nil, nil
}

func (m *fakeStateful) LoadSession(string, ...SessionOption) (Session, error) { return nil, nil }

func TestNewSessionPassesTheOptions(t *testing.T) {
	m := &fakeStateful{}
	if _, err := NewSession(m, WithKVBits(8), WithKVGroupSize(32)); err != nil {
		t.Fatal(err)
	}
	if want := (SessionConfig{KVBits: 8, KVGroupSize: 32}); m.got != want {
		t.Fatalf("the backend got %+v, want %+v", m.got, want)
	}
}
