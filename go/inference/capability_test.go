package inference

import (
	"slices"
	"testing"
)

func TestCapabilityReport(t *testing.T) {
	r := CapabilityReport{Capabilities: []Capability{
		SupportedCapability(CapabilityGenerate, CapabilityGroupModel),
		ExperimentalCapability(CapabilityStateFork, CapabilityGroupRuntime, "forks share the cache"),
		PlannedCapability(CapabilityEmbeddings, CapabilityGroupModel, "later"),
		UnsupportedCapability(CapabilityRerank, CapabilityGroupModel, "no"),
		{ID: CapabilityChat, Status: CapabilityStatusSupported, Labels: map[string]string{"k": "v"}},
		SupportedCapability(CapabilityGenerate, CapabilityGroupModel), // a duplicate
	}}
	for id, want := range map[CapabilityID]bool{
		CapabilityGenerate: true, CapabilityStateFork: true, CapabilityChat: true,
		CapabilityEmbeddings: false, CapabilityRerank: false, CapabilityLoRATraining: false,
	} {
		if got := r.Supports(id); got != want {
			t.Errorf("Supports(%s) = %v, want %v", id, got, want)
		}
	}
	if got, want := r.SupportedCapabilityIDs(), []CapabilityID{"chat", "generate", "state.fork"}; !slices.Equal(got, want) {
		t.Errorf("SupportedCapabilityIDs() = %v, want %v", got, want)
	}
	if got, want := r.CapabilityIDs(), []CapabilityID{"chat", "embeddings", "generate", "rerank", "state.fork"}; !slices.Equal(got, want) {
		t.Errorf("CapabilityIDs() = %v, want %v", got, want)
	}
	c, ok := r.Capability(CapabilityStateFork)
	if !ok || c.Status != CapabilityStatusExperimental || c.Group != CapabilityGroupRuntime || c.Detail != "forks share the cache" {
		t.Errorf("Capability(state.fork) = %+v, %v", c, ok)
	}
	if _, ok := r.Capability(CapabilityGRPO); ok {
		t.Error("found an absent capability")
	}
	// The entry's labels are a copy.
	c, _ = r.Capability(CapabilityChat)
	c.Labels["k"] = "changed"
	if r.Capabilities[4].Labels["k"] != "v" {
		t.Error("Capability returned the report's own labels")
	}
}
