package inference

import "fmt"

// LoRAConfig says how to attach fresh LoRA weights to a model for training.
type LoRAConfig struct {
	// Rank is the low-rank dimension (> 0).
	Rank int
	// Alpha scales the low-rank product by Alpha / Rank.
	Alpha float32
	// TargetKeys names the projections to adapt ("q_proj", "v_proj", ...; nil: q_proj and
	// v_proj).
	TargetKeys []string
	// BFloat16 computes the model in bfloat16 while training (adapter weights and optimizer
	// state stay float32); it applies to models loaded with LoadTrainable.
	BFloat16 bool
}

// DefaultLoRAConfig is rank 8, alpha 16, on q_proj and v_proj.
func DefaultLoRAConfig() LoRAConfig {
	return LoRAConfig{Rank: 8, Alpha: 16, TargetKeys: []string{"q_proj", "v_proj"}}
}

// Adapter is a set of LoRA weights attached to a model.
type Adapter interface {
	// TotalParams is the number of trainable weights.
	TotalParams() int
	// Save writes the adapter into a folder (mlx-lm's format: adapters.safetensors and
	// adapter_config.json).
	Save(dir string) error
}

// TrainableModel is a TextModel that can be fine-tuned with LoRA.
type TrainableModel interface {
	TextModel
	// ApplyLoRA attaches fresh adapter weights made from cfg; the backend's own types train
	// them. It returns nil when cfg is invalid (Err says why).
	ApplyLoRA(cfg LoRAConfig) Adapter
	// Encode gives the token ids of text, special tokens added as the model adds them
	// (nil on error; Err says why).
	Encode(text string) []int32
	// Decode gives the text of ids ("" on error; Err says why).
	Decode(ids []int32) string
	// NumLayers is the number of transformer layers.
	NumLayers() int
}

// LoadTrainable loads a model for fine-tuning through the chosen backend; it fails
// (ErrUnsupported) when the backend's models cannot train.
func LoadTrainable(path string, opts ...LoadOption) (TrainableModel, error) {
	m, err := LoadModel(path, opts...)
	if err != nil {
		return nil, err
	}
	t, ok := m.(TrainableModel)
	if !ok {
		m.Close()
		return nil, contractErr(ErrUnsupported, fmt.Sprintf("inference: the %s model at %s cannot be trained by its backend", m.ModelType(), path))
	}
	return t, nil
}
