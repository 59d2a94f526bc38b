package inference

import "errors"

// Sentinels that this package's own errors match with errors.Is (a liblmx extension: the
// messages are upstream's, the sentinels are not in go-inference). A backend's errors are its
// own: the "metal" backend's are *lmx.Error values.
var (
	// ErrNoBackend: no registered backend can take the call: none is registered, none is
	// available, or the one WithBackend names is not registered or not available here.
	ErrNoBackend = errors.New("inference: no usable backend")
	// ErrUnsupported: the model's backend does not offer what was asked (sessions,
	// training).
	ErrUnsupported = errors.New("inference: not supported by the model's backend")
)

// contractError is an error of this package: its own message, matching a sentinel.
type contractError struct {
	msg  string
	kind error
}

func (e *contractError) Error() string { return e.msg }
func (e *contractError) Unwrap() error { return e.kind }

func contractErr(kind error, msg string) error { return &contractError{msg: msg, kind: kind} }
